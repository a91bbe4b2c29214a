"""Command line for sampling: the checkpoint is all it needs (weights, vocabulary and model config are inside)."""

import argparse
import sys
from pathlib import Path
from typing import Optional, TextIO

from lit_gpt.errors import LitGPTError
from lit_gpt.files import read_utf8
from lit_gpt.generate import DEFAULTS, DEVICE_HELP, TextGenerator

SEPARATOR = "---------------"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sample.py",
        description="Generate text from a lit_gpt checkpoint, streamed to stdout as it is produced. Each sample starts "
                    "with the prompt and ends with a line of dashes. With several samples, all are generated as one "
                    "batch; the first streams, the others follow when it is done.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True,
                        help="path to a .ckpt written by train.py (e.g. runs/shakespeare_char/checkpoints/last.ckpt)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="\n",
                        help="text the samples start from; every character must be in the model's vocabulary "
                             "(an empty prompt starts from a newline)")
    prompt.add_argument("--prompt_file", default=None, help="read the prompt from this UTF-8 text file instead")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULTS.max_new_tokens,
                        help="characters to generate per sample (>= 1)")
    parser.add_argument("--num_samples", type=int, default=1,
                        help="number of samples, generated as one batch (>= 1); sample i draws with seed + i")
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature,
                        help="softmax temperature: < 1 is more conservative, > 1 more random, 0 is greedy")
    parser.add_argument("--top_k", type=int, default=DEFAULTS.top_k,
                        help="sample only from the k most likely characters (>= 1)")
    parser.add_argument("--top_p", type=float, default=DEFAULTS.top_p,
                        help="sample only from the smallest set of characters whose probability reaches p, in (0, 1]")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed: the same seed gives the same text")
    parser.add_argument("--window_shift", type=int, default=None,
                        help="fast mode for text longer than the model's block_size: when the window is full, drop "
                             "the oldest K characters and refill the cache once, so every character sees at least "
                             "block_size - K characters; by default every character sees the last block_size")
    parser.add_argument("--no_cache", action="store_true",
                        help="run the whole context for every character, without the KV cache (slow; for checks)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model first (slow to start; can pay off for long generations on GPU)")
    return parser


def run(args: argparse.Namespace, out: TextIO) -> None:
    """Load, generate and write to ``out``: the first sample character by character, then the others."""
    prompt = args.prompt if args.prompt_file is None else read_utf8(Path(args.prompt_file), "prompt file",
                                                                   "--prompt_file")
    gen = TextGenerator.from_checkpoint(args.checkpoint, args.device, args.compile)
    # Checks the prompt's characters and every setting now, before any output.
    stream = gen.stream_batch(prompt, args.max_new_tokens, args.num_samples, args.temperature, args.top_k,
                              args.top_p, args.seed, use_cache=not args.no_cache, window_shift=args.window_shift)
    prefix = gen.tokenizer.decode(gen.encode_prompt(prompt))
    out.write(prefix)
    out.flush()
    rest: list[list[str]] = [[prefix] for _ in range(args.num_samples - 1)]
    for chars in stream:
        out.write(chars[0])
        out.flush()
        for text, ch in zip(rest, chars[1:]):
            text.append(ch)
    out.write(f"\n{SEPARATOR}\n")
    for text in rest:
        out.write("".join(text) + f"\n{SEPARATOR}\n")
    out.flush()


def main(argv: Optional[list[str]] = None) -> None:
    """Parse ``argv`` and sample; user errors end with one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        run(args, sys.stdout)
    except LitGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        sys.stderr.close()
        raise SystemExit(0) from None
