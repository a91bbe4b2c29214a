"""Training speed, side by side in one run: Lightning as the recipe runs it, a bare PyTorch loop over the same GPT,
windows, optimizer and schedule, Lightning with no callbacks or logger, and nanoGPT's own train.py.

    python bench/train_speed.py [--config configs/shakespeare_char_cpu.yaml] [--nanogpt_arithmetic] [--repeats 10]

Each side runs ``--warmup`` untimed steps, then ``--steps`` timed ones, in one process, so start-up and warm-up are
left out. Validation is off; everything else of the recipe stays on in the Lightning run: progress bar, TensorBoard,
learning-rate monitor, throughput, the gradient norm, periodic checkpoints.

On a CPU the bare loop is paired with Lightning step by step: after each Lightning step a callback runs one step of
the bare loop (its own model, optimizer and windows, built from the same config), so every Lightning step is timed
next to a bare one, and a shared machine whose speed drifts by 10-30% within seconds slows both alike. A run's
ratio is the median over its steps of bare / Lightning. On a GPU the clock is read, after a synchronize, only at the
two ends of each side's run, and the sides run one after the other.

nanoGPT (unchanged, read from ../shared/anchors/nanoGPT; left out where that folder is missing) runs its CPU command
with evaluation off; its time is the median of its own per-iteration times ("iter i: ... time t ms") over the same
steps, set against the recipe's median step of the run before it. ``--nanogpt_arithmetic`` gives our sides nanoGPT's
arithmetic per step (AdamW, batch 12, lr 1e-3 -> 1e-4); without it they run the recipe as it is. The sides run in a
new order in each repeat. Prints the machine, then tokens/s and ms per step of each side with its ratio to the bare
loop (median, quartiles and range of the repeats), and the recipe's time per step over nanoGPT's.
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

import common
from lit_gpt.data import TrainWindows

NANOGPT_ARITHMETIC = ["--data.batch_size", "12", "--model.optimizer", "adamw", "--model.learning_rate", "1e-3",
                      "--model.min_lr", "1e-4"]


class StepClock(Callback):
    """The clock after each of the steps ``warmup`` .. ``warmup + steps`` (on a GPU after the two ends only). With a
    ``twin`` (a BareLoop, CPU only) one bare step runs after each Lightning step, timed apart."""

    def __init__(self, warmup: int, steps: int, twin: Optional["BareLoop"] = None) -> None:
        self.warmup, self.steps, self.twin = warmup, steps, twin
        self.times: list[float] = []  # the clock after each step (after its twin's step, where there is one)
        self.own: list[float] = []  # with a twin: seconds of each timed step without the twin's
        self.twin_times: list[float] = []  # the twin's seconds per step

    def mark(self, device: torch.device, step: int) -> None:
        if not self.warmup <= step <= self.warmup + self.steps:
            if self.twin is not None:
                self.twin.step(step)  # the twin keeps pace in the warm-up too
            return
        if device.type != "cpu" and step not in (self.warmup, self.warmup + self.steps):
            return
        now = common.clock(device)
        if self.twin is not None:
            if self.times:
                self.own.append(now - self.times[-1])
            self.twin.step(step)
            after = common.clock(device)
            self.twin_times.append(after - now)
            now = after
        self.times.append(now)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.mark(trainer.strategy.root_device, trainer.global_step)

    def per_step(self) -> float:
        """Seconds per step: the median step on a CPU, the mean on a GPU."""
        if self.twin is not None:
            return statistics.median(self.own)
        if len(self.times) == 2:
            return (self.times[1] - self.times[0]) / self.steps
        return statistics.median(b - a for a, b in zip(self.times, self.times[1:]))

    def twin_ratio(self) -> float:
        """The median over the paired steps of bare / Lightning (the twin's step is the first of each pair's)."""
        return statistics.median(b / a for a, b in zip(self.own, self.twin_times[1:]))


class BareLoop:
    """The recipe's model, windows, optimizer, schedule, clipping and precision in a plain loop, nothing else."""

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        cli = common.build_cli(args.config, 1, workdir, args.overrides)  # its objects and settings; not its Trainer
        trainer, module, data = cli.trainer, cli.model, cli.datamodule
        self.device = trainer.strategy.root_device
        module.trainer = trainer
        module.configure_model()  # the Lightning side's set-up: torch.compile and TF32 where the recipe uses them
        module.trainer = None
        self.model = module.model.to(self.device).train()
        opt_config = module.configure_optimizers()
        self.optimizer, self.schedule = opt_config["optimizer"], opt_config["lr_scheduler"]["scheduler"]
        self.windows = TrainWindows(data.train_data, data.block_size, data.batch_size, data.seed)
        bf16 = trainer.precision == "bf16-mixed"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        self.clip = trainer.gradient_clip_val

    def step(self, step: int) -> None:
        x, y = (t.to(self.device, non_blocking=True) for t in self.windows.batch(step))  # (B, T) each
        with self.autocast:
            _, loss = self.model(x, y)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()


def lightning_side(args: argparse.Namespace, bare_trainer: bool = False) -> dict[str, float]:
    """Seconds per step of Trainer.fit as the recipe runs it; with ``bare_trainer``, with no callbacks and no logger
    (Lightning's loop around our LightningModule and DataModule and nothing else). On a CPU also the paired bare
    loop's seconds per step and the ratio bare / Lightning."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.warmup + args.steps, workdir, args.overrides)
        cpu = cli.trainer.strategy.root_device.type == "cpu"
        if bare_trainer:
            cli.trainer.callbacks[:] = []
            cli.trainer.loggers = []
        clock = StepClock(args.warmup, args.steps, BareLoop(args, workdir) if cpu else None)
        cli.trainer.callbacks.append(clock)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the bar runs, unseen
            cli.trainer.fit(cli.model, cli.datamodule)
        if not cpu:
            return {"seconds": clock.per_step()}
        return {"seconds": clock.per_step(), "bare": statistics.median(clock.twin_times), "vs_bare": clock.twin_ratio()}


def bare_side(args: argparse.Namespace) -> dict[str, float]:
    """The bare loop alone (a GPU's sequential comparison)."""
    with tempfile.TemporaryDirectory() as workdir:
        loop, clock = BareLoop(args, workdir), StepClock(args.warmup, args.steps)
        for step in range(args.warmup + args.steps):
            loop.step(step)
            clock.mark(loop.device, step + 1)
        return {"seconds": clock.per_step()}


def nanogpt_side(args: argparse.Namespace) -> dict[str, float]:
    """nanoGPT's train.py: the median of its own per-iteration times over the timed steps."""
    last = args.warmup + args.steps
    out = subprocess.run(
        common.nanogpt_command("--eval_iters=1", "--eval_interval=1000000", "--always_save_checkpoint=False",
                               f"--max_iters={last}", "--lr_decay_iters=2000"),
        cwd=args.nanogpt_dir, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    times = {int(i): float(t) for i, t in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", out, re.M)}
    return {"seconds": statistics.median(times[i] for i in range(args.warmup + 1, last + 1)) / 1e3}


SIDES = {"lightning": ("Lightning, the recipe", lightning_side),
         "floor": ("Lightning, no callbacks/logger", lambda a: lightning_side(a, bare_trainer=True)),
         "nanogpt": ("nanoGPT's train.py", nanogpt_side), "bare": ("bare PyTorch loop", bare_side)}


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
    cpu = cli.trainer.strategy.root_device.type == "cpu"
    print(f"recipe {args.config} {' '.join(args.overrides)}: {tokens} tokens per step, device "
          f"{cli.trainer.strategy.root_device}, precision {cli.trainer.precision}; {args.warmup} + {args.steps} "
          f"steps, {args.repeats} repeats; bare loop {'paired step by step' if cpu else 'run on its own'}")
    sides = dict(SIDES)
    if cpu:
        del sides["bare"]  # paired with each Lightning run instead
    if "shakespeare_char_cpu" not in args.config or not common.nanogpt_available():
        del sides["nanogpt"]
        print(f"nanoGPT left out: it runs with the CPU recipe only, from {common.NANOGPT}")
    with tempfile.TemporaryDirectory() as tmp:
        args.nanogpt_dir = common.nanogpt_copy(Path(tmp)) if "nanogpt" in sides else None
        results = []
        for repeat in range(args.repeats):
            names = list(sides)[repeat % len(sides):] + list(sides)[: repeat % len(sides)]
            result = {name: sides[name][1](args) for name in names}
            if cpu:  # the bare loop paired with the recipe's run: its time and ratio
                result["bare"] = {"seconds": result["lightning"]["bare"]}
            for name, r in result.items():
                r.setdefault("vs_bare", result["bare"]["seconds"] / r["seconds"])
            results.append(result)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {r['seconds'] * 1e3:.2f} ms" for n, r in result.items()),
                  flush=True)
    print(f"{'':32s} {'tokens/s':>9s} {'ms/step':>8s}  speed vs bare: median [quartiles] (range)")
    for name in ["bare", *[n for n in sides if n != "bare"]]:
        per_step = statistics.median(r[name]["seconds"] for r in results)
        paired = " (paired steps)" if cpu and name in ("lightning", "floor") else ""
        print(f"{SIDES[name][0]:32s} {tokens / per_step:9.0f} {per_step * 1e3:8.2f}  "
              f"{spread([r[name]['vs_bare'] for r in results])}{paired}")
    if "nanogpt" in sides:
        ratios = [r["lightning"]["seconds"] / r["nanogpt"]["seconds"] for r in results]
        print(f"per-step time, the recipe / nanoGPT: {spread(ratios)} over {len(results)} repeats")


def spread(values: list[float]) -> str:
    """'median [lower quartile-upper quartile] (min-max)' of per-repeat ratios."""
    values = sorted(values)
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{q2:.3f} [{q1:.3f}-{q3:.3f}] ({values[0]:.3f}-{values[-1]:.3f})"


if __name__ == "__main__":
    main()
