"""Training speed, side by side in one run: Lightning as the recipe runs it, a bare PyTorch loop over the same GPT,
windows, optimizer and schedule, Lightning with no callbacks or logger, and nanoGPT's own train.py.

    python bench/train_speed.py [--config configs/shakespeare_char_cpu.yaml] [--nanogpt_arithmetic] [--repeats 5]

Each side runs ``--warmup`` untimed steps, then ``--steps`` timed ones, in one process, so start-up and warm-up are
left out. On a CPU a side's time is the median of its steps' times (a shared machine's hiccups fall outside it); on
a GPU the clock is read, after a synchronize, only at the two ends, and the time is their mean. Validation is off; everything
else of the recipe stays on in the Lightning run: progress bar, TensorBoard, learning-rate monitor, throughput, the
gradient norm, periodic checkpoints. nanoGPT (unchanged, read from ../shared/anchors/nanoGPT; left out where that
folder is missing) runs its CPU command with evaluation off; its time is the sum of its own per-iteration times
("iter i: ... time t ms") over the same steps. ``--nanogpt_arithmetic`` gives our sides nanoGPT's arithmetic per
step (AdamW, batch 12, lr 1e-3 -> 1e-4); without it they run the recipe as it is. The sides run in a new order in
each repeat, so that a shared machine's slow drifts hit all alike. Prints the machine, then tokens/s and ms per
step of each side with its ratio to the bare loop (median and every repeat), and the recipe's time per step over
nanoGPT's (median and range).
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

import common
from lit_gpt.data import TrainWindows

NANOGPT_ARITHMETIC = ["--data.batch_size", "12", "--model.optimizer", "adamw", "--model.learning_rate", "1e-3",
                      "--model.min_lr", "1e-4"]


class StepClock(Callback):
    """The clock after each of the steps ``warmup`` .. ``warmup + steps`` (on a GPU after the two ends only)."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.times = warmup, steps, []

    def mark(self, device: torch.device, step: int) -> None:
        if self.warmup <= step <= self.warmup + self.steps and (
                device.type == "cpu" or step in (self.warmup, self.warmup + self.steps)):
            self.times.append(common.clock(device))

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.mark(trainer.strategy.root_device, trainer.global_step)

    def per_step(self) -> float:
        """Seconds per step: the median step on a CPU, the mean on a GPU."""
        if len(self.times) == 2:
            return (self.times[1] - self.times[0]) / self.steps
        return statistics.median(b - a for a, b in zip(self.times, self.times[1:]))


def lightning_side(args: argparse.Namespace, bare_trainer: bool = False) -> float:
    """Seconds per step of Trainer.fit as the recipe runs it; with ``bare_trainer``, with no callbacks and no logger
    (Lightning's loop around our LightningModule and DataModule and nothing else)."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.warmup + args.steps, workdir, args.overrides)
        if bare_trainer:
            cli.trainer.callbacks[:] = []
            cli.trainer.loggers = []
        clock = StepClock(args.warmup, args.steps)
        cli.trainer.callbacks.append(clock)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the bar runs, unseen
            cli.trainer.fit(cli.model, cli.datamodule)
        return clock.per_step()


def bare_side(args: argparse.Namespace) -> float:
    """The same model, windows, optimizer, schedule, clipping and precision in a plain loop, nothing else."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, 1, workdir, args.overrides)  # its objects and settings; not its Trainer
        trainer, module, data = cli.trainer, cli.model, cli.datamodule
        device = trainer.strategy.root_device
        module.trainer = trainer
        module.configure_model()  # the Lightning side's set-up: torch.compile and TF32 where the recipe uses them
        module.trainer = None
        model = module.model.to(device).train()
        opt_config = module.configure_optimizers()
        optimizer, schedule = opt_config["optimizer"], opt_config["lr_scheduler"]["scheduler"]
        windows = TrainWindows(data.train_data, data.block_size, data.batch_size, data.seed)
        bf16 = trainer.precision == "bf16-mixed"
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        clip, clock = trainer.gradient_clip_val, StepClock(args.warmup, args.steps)
        for step in range(args.warmup + args.steps):
            x, y = (t.to(device, non_blocking=True) for t in windows.batch(step))
            with autocast:
                _, loss = model(x, y)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            clock.mark(device, step + 1)
        return clock.per_step()


def nanogpt_side(args: argparse.Namespace) -> float:
    """nanoGPT's train.py: the median of its own per-iteration times over the timed steps."""
    last = args.warmup + args.steps
    out = subprocess.run(
        common.nanogpt_command("--eval_iters=1", "--eval_interval=1000000", "--always_save_checkpoint=False",
                               f"--max_iters={last}", "--lr_decay_iters=2000"),
        cwd=args.nanogpt_dir, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    times = {int(i): float(t) for i, t in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", out, re.M)}
    return statistics.median(times[i] for i in range(args.warmup + 1, last + 1)) / 1e3


SIDES = {"bare": ("bare PyTorch loop", bare_side), "lightning": ("Lightning, the recipe", lightning_side),
         "floor": ("Lightning, no callbacks/logger", lambda a: lightning_side(a, bare_trainer=True)),
         "nanogpt": ("nanoGPT's train.py", nanogpt_side)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="the recipe to time")
    parser.add_argument("--nanogpt_arithmetic", action="store_true", help="AdamW, batch 12, lr 1e-3 -> 1e-4")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, in every run")
    parser.add_argument("--steps", type=int, default=50, help="timed steps in every run")
    parser.add_argument("--repeats", type=int, default=10, help="runs of each side (medians are reported)")
    args, overrides = parser.parse_known_args()  # anything else is a recipe override, e.g. --data.batch_size=16
    args.overrides = overrides + (NANOGPT_ARITHMETIC if args.nanogpt_arithmetic else [])
    print(common.machine_line())
    cli = common.build_cli(args.config, 1, tempfile.gettempdir(), args.overrides)
    tokens = cli.datamodule.batch_size * cli.datamodule.block_size
    print(f"recipe {args.config} {' '.join(args.overrides)}: {tokens} tokens per step, device "
          f"{cli.trainer.strategy.root_device}, precision {cli.trainer.precision}; {args.warmup} + {args.steps} "
          f"steps, {args.repeats} repeats")
    sides = dict(SIDES)
    if "shakespeare_char_cpu" not in args.config or not common.nanogpt_available():
        del sides["nanogpt"]
        print(f"nanoGPT left out: it runs with the CPU recipe only, from {common.NANOGPT}")
    with tempfile.TemporaryDirectory() as tmp:
        args.nanogpt_dir = common.nanogpt_copy(Path(tmp)) if "nanogpt" in sides else None
        results = []
        for repeat in range(args.repeats):
            names = list(sides)[repeat % len(sides):] + list(sides)[: repeat % len(sides)]
            results.append({name: sides[name][1](args) for name in names})
            print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {t * 1e3:.2f} ms" for n, t in results[-1].items()),
                  flush=True)
    print(f"{'':32s} {'tokens/s':>9s} {'ms/step':>8s}  speed vs bare: median [quartiles] (range)")
    for name in sides:
        per_step = statistics.median(r[name] for r in results)
        print(f"{sides[name][0]:32s} {tokens / per_step:9.0f} {per_step * 1e3:8.2f}  "
              f"{spread([r['bare'] / r[name] for r in results])}")
    if "nanogpt" in sides:
        print(f"per-step time, the recipe / nanoGPT: {spread([r['lightning'] / r['nanogpt'] for r in results])} over "
              f"{len(results)} repeats")


def spread(values: list[float]) -> str:
    """'median [lower quartile-upper quartile] (min-max)' of per-repeat ratios."""
    values = sorted(values)
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{q2:.3f} [{q1:.3f}-{q3:.3f}] ({values[0]:.3f}-{values[-1]:.3f})"


if __name__ == "__main__":
    main()
