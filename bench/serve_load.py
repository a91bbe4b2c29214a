"""A classroom on serve.py: N clients open a streaming completion (OpenAI's protocol) at the same moment, from
127.0.0.1, against one server with its default settings; for each N, beside one client alone on the same server.

    python bench/serve_load.py --checkpoint CKPT --clients 1 8 32 --characters 300

Prints, for each N: every client's characters together per second and its ratio to one client's, each stream's own
characters/s (median), the first character's p50 and p95, the p95 gap between two arrivals of text in a stream, and
errors; then whether seed 7's text amid the others equals its text alone and sample.py's (with the server's window
shift). ``--server_dir`` runs another checkout's serve.py (an earlier version, for a before/after).
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import common
from lit_gpt.generate import TextGenerator


def one_stream(port: int, characters: int, seed: int, start: threading.Barrier) -> dict:
    """One streaming request, sent when every client is ready: its text and when each piece arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"model": "m", "prompt": "\n", "max_tokens": characters, "seed": seed, "stream": True})
    start.wait()
    began, arrivals, text = time.perf_counter(), [], []
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    for line in iter(response.readline, b""):  # server-sent events: "data: {...}", then "data: [DONE]"
        data = line.decode().removeprefix("data: ").strip()
        if not data or data == "[DONE]":
            continue
        piece = json.loads(data)["choices"][0]["text"]
        if piece:
            arrivals.append(time.perf_counter() - began)
            text.append(piece)
    conn.close()
    return {"text": "".join(text), "arrivals": arrivals}


def classroom(port: int, clients: int, characters: int) -> tuple[list[dict], int, float]:
    """``clients`` streams at once (seeds 7, then 100, 101, ...): (results, errors, seconds until the last ended)."""
    seeds = [7, *range(100, 100 + clients - 1)]
    start, results, errors = threading.Barrier(clients + 1), {}, []

    def client(seed: int) -> None:
        try:
            results[seed] = one_stream(port, characters, seed, start)
        except Exception as err:  # noqa: BLE001 (counted and reported)
            errors.append(err)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return [results[s] | {"seed": s} for s in seeds if s in results], len(errors), time.perf_counter() - began


def p(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values, nan for none."""
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))] if ordered else float("nan")


def healthy(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            body = answer.read()
        return json.loads(body) if body.startswith(b"{") else {"status": body.decode()}
    except OSError:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="clients at once, one round each")
    parser.add_argument("--characters", type=int, default=300, help="characters each client asks for")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--server_dir", default=str(common.ROOT), help="the checkout whose serve.py runs")
    parser.add_argument("--serve_args", nargs=argparse.REMAINDER, default=[], help="more serve.py options (last)")
    args = parser.parse_args()
    print(common.machine_line(), flush=True)
    port = common.free_port()
    server = subprocess.Popen([sys.executable, str(Path(args.server_dir) / "serve.py"), "--checkpoint",
                               args.checkpoint, "--port", str(port), "--device", args.device, *args.serve_args],
                              cwd=args.server_dir)
    try:
        while not healthy(port) and server.poll() is None:
            time.sleep(0.2)
        if server.poll() is not None:
            sys.exit("error: serve.py did not start")
        settings = healthy(port)
        print(f"serve.py ({args.server_dir}) {' '.join(args.serve_args)}: {settings}; {args.characters} characters "
              f"per client, all starting at once", flush=True)
        classroom(port, 1, 20)  # warm-up
        alone, alone_rate = None, None
        for clients in sorted(set([1, *args.clients])):
            results, errors, seconds = classroom(port, clients, args.characters)
            rate = sum(len(r["text"]) for r in results) / seconds
            alone = alone or results[0]["text"]
            alone_rate = alone_rate or rate
            firsts = [r["arrivals"][0] * 1e3 for r in results if r["arrivals"]]
            gaps = [(b - a) * 1e3 for r in results for a, b in zip(r["arrivals"], r["arrivals"][1:])]
            streams = [len(r["text"]) / r["arrivals"][-1] for r in results if r["arrivals"]]
            if clients in args.clients:
                print(f"  {clients:2d} clients: {rate:6.0f} characters/s together ({rate / alone_rate:5.2f}x one "
                      f"client), {statistics.median(streams):4.0f}/s per stream; first character p50 "
                      f"{p(firsts, 0.5):5.0f} ms, p95 {p(firsts, 0.95):5.0f} ms; gap p95 {p(gaps, 0.95):4.0f} ms; "
                      f"errors {errors}", flush=True)
        amid = results[0]["text"]  # seed 7 among the most clients
        shift = settings.get("window_shift")
        sampled = "".join(TextGenerator.from_checkpoint(args.checkpoint, args.device).stream(
            "\n", args.characters, seed=7, window_shift=shift))
        print(f"  seed 7 amid {clients - 1} others = alone: {amid == alone}; = sample.py --seed 7 "
              f"--window_shift {shift}: {amid == sampled}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
