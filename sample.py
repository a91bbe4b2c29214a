"""Sample text from a lit_gpt checkpoint: ``python sample.py --checkpoint runs/<run>/checkpoints/last.ckpt``."""

from lit_gpt.sample_cli import main

if __name__ == "__main__":
    main()
