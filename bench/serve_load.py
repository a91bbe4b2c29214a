"""Load on serve.py: N streaming completions (OpenAI's protocol) at a time from a client on 127.0.0.1, beside
sample.py's one stream (characters/s, first-character latency, errors).

    python bench/serve_load.py --checkpoint CKPT --clients 1 2 4 8 --requests 8 --characters 200 --workers 2
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import common
from lit_gpt.generate import TextGenerator


def one_request(port: int, characters: int, seed: int) -> tuple[float, int]:
    """(seconds to the first character, characters received) of one streaming request."""
    start, first, count = time.perf_counter(), None, 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = {"model": "m", "prompt": "\n", "max_tokens": characters, "seed": seed, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    for line in iter(response.readline, b""):  # server-sent events: "data: {...}", then "data: [DONE]"
        data = line.decode().removeprefix("data: ").strip()
        if not data or data == "[DONE]":
            continue
        text = json.loads(data)["choices"][0]["text"]
        first = time.perf_counter() - start if first is None and text else first
        count += len(text)
    return first, count


def healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8], help="requests at a time")
    parser.add_argument("--requests", type=int, default=8, help="requests for each client count")
    parser.add_argument("--characters", type=int, default=200, help="characters asked for by each request")
    parser.add_argument("--workers", type=int, default=2, help="serve.py's --workers")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(common.machine_line(), flush=True)
    gen = TextGenerator.from_checkpoint(args.checkpoint, args.device)
    sum(1 for _ in gen.stream("\n", 20, seed=0))  # warm-up
    start = time.perf_counter()
    single = sum(1 for _ in gen.stream("\n", args.characters, seed=0)) / (time.perf_counter() - start)
    print(f"sample.py's generator, one stream: {single:.0f} characters/s", flush=True)
    port = common.free_port()
    server = subprocess.Popen([sys.executable, str(common.ROOT / "serve.py"), "--checkpoint", args.checkpoint, "--port",
                               str(port), "--workers", str(args.workers), "--device", args.device])
    try:
        while not healthy(port) and server.poll() is None:
            time.sleep(0.2)
        if server.poll() is not None:
            sys.exit("error: serve.py did not start")
        print(f"serve.py, {args.workers} worker(s), {args.requests} requests of {args.characters} characters:")
        for clients in args.clients:
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                futures = [pool.submit(one_request, port, args.characters, seed) for seed in range(args.requests)]
            results = [f.result() for f in futures if f.exception() is None]
            rate = sum(count for _, count in results) / (time.perf_counter() - start)
            ms = sorted(first * 1e3 for first, _ in results if first is not None) or [float("nan")]
            print(f"  {clients:2d} at a time: {rate:6.0f} characters/s ({rate / single:.2f}x one stream), first "
                  f"character median {statistics.median(ms):.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f}"
                  f" ms, errors {len(futures) - len(results)}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
