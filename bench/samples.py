"""Samples side by side, with the same prompt, seed and settings (temperature 0.8, top-k 200): nanoGPT's CPU model,
trained here by its unchanged train.py and sampled by its sample.py, then each of our checkpoints.

    python bench/samples.py --checkpoints runs/shakespeare_char_cpu/checkpoints/last.ckpt ... [--seed 1337]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common
from lit_gpt.generate import TextGenerator


def nanogpt_sample(prompt: str, length: int, seed: int, iters: int) -> str:
    """nanoGPT's CPU command for ``iters`` iterations, then its sample.py on the checkpoint it kept."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = common.nanogpt_copy(Path(tmp))
        (folder / "tiktoken.py").write_text("")  # sample.py imports it, and uses the corpus's characters instead
        env = {**os.environ, "PYTHONPATH": ""}
        subprocess.run(common.nanogpt_command(f"--max_iters={iters}", f"--lr_decay_iters={iters}"), cwd=folder,
                       env=env, check=True, capture_output=True)
        out = subprocess.run([sys.executable, "sample.py", "--out_dir=out-shakespeare-char", "--device=cpu",
                              "--compile=False", f"--start={prompt}", "--num_samples=1",
                              f"--max_new_tokens={length}", f"--seed={seed}"],
                             cwd=folder, env=env, check=True, capture_output=True, text=True).stdout
    return out[out.index("\n" + prompt) + 1:].split("\n---------------")[0]  # after its "Overriding: ..." lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="our checkpoints to sample")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--length", type=int, default=300, help="characters after the prompt")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--nanogpt_iters", type=int, default=2000, help="0: leave nanoGPT out")
    args = parser.parse_args()
    print(common.machine_line(), flush=True)
    if args.nanogpt_iters and common.NANOGPT.is_dir():
        print(f"\n== nanoGPT's CPU model, {args.nanogpt_iters} iterations ==\n"
              f"{nanogpt_sample(args.prompt, args.length, args.seed, args.nanogpt_iters)}", flush=True)
    for path in args.checkpoints:
        text = TextGenerator.from_checkpoint(path, "cpu").generate(args.prompt, args.length, seed=args.seed)[0]
        print(f"\n== {path} ==\n{text}", flush=True)


if __name__ == "__main__":
    main()
