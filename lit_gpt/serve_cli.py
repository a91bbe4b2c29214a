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
                        help="processes generating at once, each with its own copy of the model")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a request may wait for a free worker before it is answered 504")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    """Parse ``argv``, check the checkpoint and serve until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        if not 1 <= args.port <= 65535:
            raise LitGPTError(f"--port must be from 1 to 65535, got {args.port}")
        if args.workers < 1:
            raise LitGPTError(f"--workers must be at least 1, got {args.workers}")
        if importlib.util.find_spec("litserve") is None:
            raise LitGPTError('serving needs LitServe, an optional extra: pip install -e ".[serve]" (or litserve)')
        from lit_gpt.serve import build_server, model_name

        server = build_server(args.checkpoint, args.device, args.workers, args.timeout)
        check_port(args.host, args.port)
    except LitGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"lit_gpt: serving {args.checkpoint} as model {model_name(args.checkpoint)!r} on http://{args.host}:"
          f"{args.port}/ (OpenAI's API at http://{args.host}:{args.port}/v1); Ctrl-C or SIGTERM stops it",
          file=sys.stderr, flush=True)
    # LitServe shuts its workers down on KeyboardInterrupt but not on SIGTERM (it would leave them running): the same.
    main_pid = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() == main_pid:  # not in a process forked from this one
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    print("lit_gpt: server stopped", file=sys.stderr, flush=True)
