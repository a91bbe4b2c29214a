"""Serve a lit_gpt checkpoint over HTTP: ``python serve.py --checkpoint runs/<run>/checkpoints/last.ckpt``."""

from lit_gpt.serve_cli import main

if __name__ == "__main__":
    main()
