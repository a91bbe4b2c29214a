"""Sampling speed on the default recipe's architecture (random weights), the KV cache against the cache-free loop,
side by side in one run; with ``--checkpoint``, the time to load it and to its first character.

    python bench/sample_speed.py [--device cpu] [--repeats 3] [--checkpoint PATH]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import common
from lit_gpt.config import GPTConfig
from lit_gpt.generate import TextGenerator
from lit_gpt.model import GPT

PROMPT = "ROMEO:\n"
CHARS = sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def random_generator(device: str) -> TextGenerator:
    """The default recipe's GPT with random weights, saved as a checkpoint and loaded as sample.py loads one."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(CHARS), block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)
    state = {f"model.{k}": v for k, v in GPT(config).state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"hyper_parameters": {"config": vars(config), "vocab": CHARS, "arch": "gpt"}, "state_dict": state},
                   Path(tmp) / "random.ckpt")
        return TextGenerator.from_checkpoint(Path(tmp) / "random.ckpt", device=device)


def tokens_per_second(gen: TextGenerator, n: int, repeats: int, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = common.clock(gen.device)
        for _ in gen.stream(PROMPT, max_new_tokens=n, seed=1337, **kwargs):
            pass  # each character is already on the host
        times.append(common.clock(gen.device) - start)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (the median is shown)")
    parser.add_argument("--long", type=int, default=1000, help="new characters in the long-text measurement")
    parser.add_argument("--checkpoint", default=None, help="also time the first character after loading this .ckpt")
    args = parser.parse_args()
    print(common.machine_line())
    gen = random_generator(args.device)
    block = gen.model.block_size
    print(f"device {gen.device}; model 6 x 6 x 384, block {block}; tokens/s, median of {args.repeats}")
    tokens_per_second(gen, 8, 1)  # warm-up
    fill, free = block - len(PROMPT), {"use_cache": False}
    for title, n, modes in ((f"fill the window ({fill} characters after a {len(PROMPT)}-character prompt)", fill,
                             {"cache-free": free, "KV cache": {}}),
                            (f"{args.long} new characters", args.long,
                             {"cache-free": free, "exact": {}, "windowed": {"window_shift": block // 2}})):
        speeds = {mode: tokens_per_second(gen, n, args.repeats, **kwargs) for mode, kwargs in modes.items()}
        print(f"{title}: " + ", ".join(f"{m} {s:.1f} ({s / speeds['cache-free']:.2f}x)" for m, s in speeds.items()))
    if args.checkpoint:
        t0 = time.perf_counter()
        gen = TextGenerator.from_checkpoint(args.checkpoint, device=args.device)
        t1 = time.perf_counter()
        next(iter(gen.stream(PROMPT, max_new_tokens=500)))
        print(f"{args.checkpoint}: loaded in {t1 - t0:.3f} s; first character {time.perf_counter() - t1:.3f} s later")


if __name__ == "__main__":
    main()
