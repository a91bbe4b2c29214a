"""Train or validate a character-level GPT: ``python train.py fit --config configs/shakespeare_char.yaml``."""

from lit_gpt.cli import cli_main

if __name__ == "__main__":
    cli_main()
