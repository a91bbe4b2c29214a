"""Sampling speed: KV cache vs. the cache-free loop, side by side in one run.

    python bench/sample_speed.py [--device cpu] [--repeats 3] [--checkpoint PATH]

Builds a checkpoint of the shakespeare_char architecture (6 layers, 6 heads, 384 wide, block 256; random weights,
65 characters) in a temporary directory, loads it through the public API, and prints tokens/s (median of the
repeats) and ratios for:
  1. filling the window: block_size - len(prompt) new characters from a short prompt, cached vs cache-free;
  2. 1000 new characters: cache-free vs exact mode vs windowed mode (window_shift = block_size / 2).
With --checkpoint, it also prints how long after loading that checkpoint the first character is ready.
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
CHARS = sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))  # tiny Shakespeare's 65


def write_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(CHARS), block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)
    model = GPT(config)
    torch.save({"hyper_parameters": {"config": vars(config), "vocab": CHARS, "arch": "gpt"},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)


def tokens_per_second(gen: TextGenerator, n: int, repeats: int, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = common.clock(gen.device)
        for _ in gen.stream(PROMPT, max_new_tokens=n, seed=1337, **kwargs):
            pass  # each character is already on the host: stream() calls .tolist() per step
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

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shakespeare_char_random.ckpt"
        write_checkpoint(path)
        gen = TextGenerator.from_checkpoint(path, device=args.device)
    block = gen.model.block_size
    print(f"device: {gen.device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"model 6x6x384, block {block}; median of {args.repeats}")
    tokens_per_second(gen, 8, 1)  # warm-up

    fill = block - len(PROMPT)
    free = tokens_per_second(gen, fill, args.repeats, use_cache=False)
    cached = tokens_per_second(gen, fill, args.repeats)
    print(f"\n1. fill the window ({fill} new characters after a {len(PROMPT)}-character prompt)")
    print(f"   cache-free   {free:9.1f} tokens/s   1.00x")
    print(f"   KV cache     {cached:9.1f} tokens/s   {cached / free:5.2f}x")

    shift = block // 2
    free = tokens_per_second(gen, args.long, args.repeats, use_cache=False)
    exact = tokens_per_second(gen, args.long, args.repeats)
    windowed = tokens_per_second(gen, args.long, args.repeats, window_shift=shift)
    print(f"\n2. {args.long} new characters")
    print(f"   cache-free               {free:9.1f} tokens/s   1.00x")
    print(f"   exact (cache, default)   {exact:9.1f} tokens/s   {exact / free:5.2f}x")
    print(f"   windowed (shift {shift})    {windowed:9.1f} tokens/s   {windowed / free:5.2f}x")

    if args.checkpoint:
        start = time.perf_counter()
        gen = TextGenerator.from_checkpoint(args.checkpoint, device=args.device)
        loaded = time.perf_counter()
        next(iter(gen.stream(PROMPT, max_new_tokens=500)))
        first = time.perf_counter()
        print(f"\n{args.checkpoint}: loaded in {loaded - start:.3f} s; first character {first - loaded:.3f} s later")


if __name__ == "__main__":
    main()
