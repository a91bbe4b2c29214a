"""Time per training step, ours against nanoGPT's, side by side in one run: the recipe under Lightning's Trainer
as train.py runs it (validation off) and nanoGPT's own train.py with the same model and arithmetic: its CPU command
beside the CPU recipe, its GPU config beside the GPU recipe on a GPU. Method: docs/benchmarks.md.

    python bench/train_speed.py [--config configs/shakespeare_char_cpu.yaml] [--nanogpt_arithmetic] [--repeats 10]
    python bench/train_speed.py --precisions 32-true bf16-mixed     # ours at each precision, side by side
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback

import common
from lit_gpt.progress import plain_output

NANOGPT_ARITHMETIC = ["--data.batch_size", "12", "--model.optimizer", "adamw", "--model.learning_rate", "1e-3",
                      "--model.min_lr", "1e-4", "--model.config.position", "learned"]  # nanoGPT's CPU command per step


class StepClock(Callback):
    """The clock after each of the optimizer steps ``warmup`` .. ``warmup + steps``, once the device is done."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.times = warmup, steps, []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.warmup <= trainer.global_step <= self.warmup + self.steps:
            self.times.append(common.clock(trainer.strategy.root_device))


def timing_parser(doc: str, warmup: int, steps: int, repeats: int) -> argparse.ArgumentParser:
    """The options every timing of a recipe under the Trainer takes: the recipe, nanoGPT's arithmetic, the steps."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="the recipe to time")
    parser.add_argument("--nanogpt_arithmetic", action="store_true", help="ours with " + " ".join(NANOGPT_ARITHMETIC))
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps first, in every run")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps in every run")
    parser.add_argument("--repeats", type=int, default=repeats, help="runs of each side, interleaved")
    return parser


def timed_fit(cli: Any, args: argparse.Namespace) -> float:
    """Run the CLI's Trainer for ``args.warmup + args.steps`` steps, its output unseen; the median seconds per step
    after the warmup."""
    clock = StepClock(args.warmup, args.steps)
    cli.trainer.callbacks.append(clock)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), plain_output():  # the bar runs
        cli.trainer.fit(cli.model, cli.datamodule)
    return statistics.median(b - a for a, b in zip(clock.times, clock.times[1:]))


def ours(args: argparse.Namespace, precision: Optional[str] = None) -> dict[str, float]:
    extra = ["--trainer.precision", precision] if precision else []
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.warmup + args.steps, workdir, [*args.overrides, *extra])
        result = {"seconds": timed_fit(cli, args)}
        writes, path = [], Path(workdir) / "last.ckpt"
        for _ in range(args.saves):
            start = time.perf_counter()
            cli.trainer.save_checkpoint(path)  # the atomic write training uses
            writes.append(time.perf_counter() - start)
        if writes:
            result.update(write=statistics.median(writes), size=path.stat().st_size)
        return result


def nanogpt(args: argparse.Namespace) -> dict[str, float]:
    last = args.warmup + args.steps
    cmd = common.nanogpt_command("--eval_iters=1", "--eval_interval=1000000", "--always_save_checkpoint=False",
                                 "--log_interval=1", f"--max_iters={last}", cpu=args.cpu)
    out = subprocess.run(cmd, cwd=args.nanogpt_dir, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}).stdout
    times = {int(i): float(t) for i, t in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", out, re.M)}
    return {"seconds": statistics.median(times[i] for i in range(args.warmup + 1, last + 1)) / 1e3}


def spread(values: list[float]) -> str:
    """'median [lower quartile-upper quartile] (min-max)'."""
    values = sorted(values)
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return f"{q2:.3f} [{q1:.3f}-{q3:.3f}] ({values[0]:.3f}-{values[-1]:.3f})"


def main() -> None:
    parser = timing_parser(__doc__, warmup=5, steps=50, repeats=10)
    parser.add_argument("--saves", type=int, default=0, help="checkpoint writes to time after each of our runs")
    parser.add_argument("--precisions", nargs="+", metavar="P", help="ours at each Trainer precision, not nanoGPT")
    args, overrides = parser.parse_known_args()  # anything else is a recipe override, e.g. --data.batch_size=16
    args.overrides = overrides + (NANOGPT_ARITHMETIC if args.nanogpt_arithmetic else [])
    print(common.machine_line())
    cli = common.build_cli(args.config, 1, tempfile.gettempdir(), args.overrides)
    tokens = cli.datamodule.batch_size * cli.datamodule.block_size
    args.cpu = cli.trainer.strategy.root_device.type == "cpu"
    print(f"recipe {args.config} {' '.join(args.overrides)}: {tokens} tokens per step, device "
          f"{cli.trainer.strategy.root_device}, precision {cli.trainer.precision}; {args.warmup} + {args.steps} steps, "
          f"{args.repeats} repeats")
    matched = (args.nanogpt_arithmetic and args.config.endswith("shakespeare_char_cpu.yaml") if args.cpu
               else args.config.endswith("shakespeare_char.yaml"))  # the same arithmetic per step on both sides
    sides = {"ours": ours, "nanogpt": nanogpt} if common.NANOGPT.is_dir() and matched else {"ours": ours}
    if args.precisions:
        sides = {f"ours {p}": partial(ours, precision=p) for p in args.precisions}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        args.nanogpt_dir = common.nanogpt_copy(Path(tmp)) if "nanogpt" in sides else None
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            results.append({name: sides[name](args) for name in order})
            print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {r['seconds'] * 1e3:.2f} ms/step"
                                                       for n, r in results[-1].items()), flush=True)
    for name in sides:
        per_step = statistics.median(r[name]["seconds"] for r in results)
        print(f"{name:8s} {tokens / per_step:9.0f} tokens/s {per_step * 1e3:8.2f} ms/step (median of the repeats)")
    if "nanogpt" in sides:
        print(f"ours / nanoGPT per step: {spread([r['ours']['seconds'] / r['nanogpt']['seconds'] for r in results])}")
    elif args.precisions:
        first, *others = sides
        for name in others:
            print(f"{name} / {first} per step: {spread([r[name]['seconds'] / r[first]['seconds'] for r in results])}")
    else:
        print("nanoGPT left out: it runs beside the CPU recipe with --nanogpt_arithmetic, or the GPU recipe on a GPU")
    if args.saves and "ours" in sides:
        write, step = (statistics.median(r["ours"][k] for r in results) for k in ("write", "seconds"))
        print(f"checkpoint {results[0]['ours']['size'] / 1e6:.1f} MB, write {write * 1e3:.1f} ms (median) beside a "
              f"{step * 1e3:.2f} ms step: one write every 100 steps is {write / (write + 100 * step):.2%} of the "
              f"training time, every 60 s {write / (write + 60):.2%}")


if __name__ == "__main__":
    main()
