"""Command line for sampling: the checkpoint is all it needs (weights, vocabulary and model config are inside)."""

import argparse
import sys
from typing import Optional

import torch

from lit_gpt.errors import LitGPTError
from lit_gpt.generate import check_sampling_args, generate_text, load_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sample.py",
        description="Generate text from a lit_gpt checkpoint. Each sample starts with the prompt.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True,
                        help="path to a .ckpt written by train.py (e.g. runs/shakespeare_char/checkpoints/last.ckpt)")
    parser.add_argument("--prompt", default="\n",
                        help="text the samples start from; every character must be in the model's vocabulary "
                             "(an empty prompt starts from a newline)")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="characters to generate per sample (>= 1)")
    parser.add_argument("--num_samples", type=int, default=1, help="number of samples to generate (>= 1)")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="softmax temperature: < 1 is more conservative, > 1 more random, 0 is greedy")
    parser.add_argument("--top_k", type=int, default=200,
                        help="sample only from the k most likely characters (>= 1)")
    parser.add_argument("--top_p", type=float, default=None,
                        help="sample only from the smallest set of characters whose probability reaches p, in (0, 1]")
    parser.add_argument("--seed", type=int, default=1337, help="random seed: the same seed gives the same text")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1'")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    """Parse ``argv``, load the checkpoint and print the samples; user errors end with one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.num_samples < 1:
            raise LitGPTError(f"num_samples must be at least 1, got {args.num_samples}")
        check_sampling_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        model, tokenizer = load_checkpoint(args.checkpoint, device)
        samples = generate_text(model, tokenizer, args.prompt, args.max_new_tokens, args.num_samples,
                                args.temperature, args.top_k, args.top_p, args.seed)
    except LitGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for text in samples:
        print(text)
        print("---------------")
