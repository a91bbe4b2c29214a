"""Command line for serving: ``python serve.py --checkpoint runs/<run>/checkpoints/last.ckpt`` (see lit_gpt.serve).

It imports the server only once the optional LitServe is known to be there, so that without it the command says how
to install it in one line.
"""

import argparse
import importlib.util
import os
import signal
import socket
import sys
from typing import Any, Optional

from lit_gpt.errors import LitGPTError
from lit_gpt.generate import DEVICE_HELP


def check_port(host: str, port: int) -> None:
    """One line, before any worker starts, if the address cannot be listened on (LitServe would fail in a child)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise LitGPTError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port or --host")


def window_shift_arg(value: str) -> Optional[int]:
    """--window_shift: 'auto' (-1, the server's default), 'exact' (None) or K >= 1 (checked against the model's
    block_size by each request)."""
    if value in ("auto", "exact"):
        return -1 if value == "auto" else None
    if not value.isdigit() or int(value) < 1:
        raise LitGPTError(f"--window_shift must be 'auto', 'exact' or a positive integer, got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve.py", description="Serve a lit_gpt checkpoint over HTTP with LitServe: "
                                     "OpenAI's API (POST /v1/completions, POST /v1/chat/completions, GET /v1/models) "
                                     "and a page at /.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by train.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes generating at once, each with its own copy of the model and an equal share "
                             "of the CPU cores; on one CPU, one worker with every core serves more than several")
    parser.add_argument("--max_batch", type=int, default=32,
                        help="rows (choices of requests) a worker generates at once, one character each per step; a "
                             "step over 32 rows costs about 2.5x a step over one on a 2-core CPU (docs/serving.md), "
                             "and each row holds a KV cache of 2 x n_layer x block_size x n_embd floats (4.7 MB for "
                             "the GPU recipe's model). Requests beyond it wait in the queue")
    parser.add_argument("--window_shift", default="auto",
                        help="for text past the model's block_size, where a request gives no window_shift: 'auto' "
                             "(block_size / 2: every character sees at least half the window, at about two cached "
                             "positions per character), K (as sample.py's --window_shift K), or 'exact' (every "
                             "character sees "
                             "the last block_size; past the window each character recomputes it, and a batch gains "
                             "nothing there). The text for a seed is sample.py's with the same --window_shift")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a request may wait in the queue for a free row before it is answered 504")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    """Parse ``argv``, check the checkpoint and serve until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        if not 1 <= args.port <= 65535:
            raise LitGPTError(f"--port must be from 1 to 65535, got {args.port}")
        if args.workers < 1:
            raise LitGPTError(f"--workers must be at least 1, got {args.workers}")
        if args.max_batch < 1:
            raise LitGPTError(f"--max_batch must be at least 1, got {args.max_batch}")
        window_shift = window_shift_arg(args.window_shift)
        if importlib.util.find_spec("litserve") is None:
            raise LitGPTError('serving needs LitServe, an optional extra: pip install -e ".[serve]" (or litserve)')
        from lit_gpt.serve import build_server

        server = build_server(args.checkpoint, args.device, args.workers, args.timeout, args.max_batch, window_shift)
        check_port(args.host, args.port)
    except LitGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    settings = server.settings
    shift = "exact" if settings["window_shift"] is None else settings["window_shift"]
    print(f"lit_gpt: serving {args.checkpoint} as model {settings['model']!r} on http://{args.host}:{args.port}/ "
          f"(OpenAI's API at http://{args.host}:{args.port}/v1) on {settings['device']}: {args.workers} worker(s), "
          f"{args.max_batch} rows each, window_shift {shift}, timeout {args.timeout:g} s; Ctrl-C or SIGTERM stops it",
          file=sys.stderr, flush=True)
    # LitServe shuts its workers down on KeyboardInterrupt but not on SIGTERM (it would leave them running): the same.
    main_pid = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() == main_pid:  # not in a process forked from this one
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    print("lit_gpt: server stopped", file=sys.stderr, flush=True)
