"""Load on serve.py: N concurrent streaming requests from a client on 127.0.0.1, beside sample.py's single stream.

    python bench/serve_load.py --checkpoint CKPT --clients 1 4 8 --requests 16 --characters 200 --workers 2

Starts ``serve.py`` on a free port, then for each client count sends ``--requests`` streaming requests, that many at
a time, each for ``--characters`` characters (bounded by ``--deadline`` seconds in all), and prints characters/s
over all requests, first-character latency (median, p95) and errors; first, the single-stream speed of
``sample.py``'s generator on the same checkpoint and device, in this process.
"""

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import ROOT, machine_line

from lit_gpt.generate import TextGenerator


def one_request(port: int, characters: int, seed: int, deadline: float) -> tuple[float, int]:
    """(seconds to the first character, characters received) of one streaming request."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(1.0, deadline - time.monotonic()))
    body = {"prompt": "\n", "max_new_tokens": characters, "seed": seed, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    first, count = None, 0
    for line in iter(response.readline, b""):
        item = json.loads(line)
        if "text" in item:
            first = first if first is not None else time.perf_counter() - start
            count += len(item["text"])
    conn.close()
    return first, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--characters", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for each client count, at most")
    args = parser.parse_args()
    print(machine_line(), flush=True)

    gen = TextGenerator.from_checkpoint(args.checkpoint, args.device)
    for chars in gen.stream("\n", 20, seed=0):  # warm-up
        pass
    start = time.perf_counter()
    n = sum(1 for _ in gen.stream("\n", args.characters, seed=0))
    single = n / (time.perf_counter() - start)
    print(f"sample.py's generator, one stream: {single:.0f} characters/s", flush=True)

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--checkpoint", args.checkpoint, "--port",
                               str(port), "--workers", str(args.workers), "--device", args.device])
    try:
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/health")
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("error: serve.py did not start")
                time.sleep(0.2)
        print(f"serve.py, {args.workers} worker(s), {args.requests} requests of {args.characters} characters:")
        for clients in args.clients:
            deadline = time.monotonic() + args.deadline
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                futures = [pool.submit(one_request, port, args.characters, seed, deadline)
                           for seed in range(args.requests)]
                results, errors = [], 0
                for future in futures:
                    try:
                        results.append(future.result(timeout=max(0.1, deadline - time.monotonic())))
                    except Exception:
                        errors += 1
            wall = time.perf_counter() - start
            firsts = sorted(r[0] for r in results if r[0] is not None)
            total = sum(r[1] for r in results)
            p95 = firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))] if firsts else float("nan")
            print(f"  {clients:2d} at a time: {total / wall:6.0f} characters/s ({total / wall / single:.2f}x one "
                  f"stream), first character median {statistics.median(firsts) * 1000 if firsts else float('nan'):.0f}"
                  f" ms, p95 {p95 * 1000:.0f} ms, errors {errors}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
