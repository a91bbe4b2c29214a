"""The cost per training step of each callback group a run adds, and of Lightning's own loop, beside a bare PyTorch
loop over the same model, batches, optimizer, schedule and gradient clipping, in one run.

    python bench/callback_cost.py [--config configs/shakespeare_char_cpu.yaml] [--nanogpt_arithmetic] [--repeats 3]

Variants, interleaved in every repeat: the bare loop; Lightning with none of our callbacks and no logger ("Lightning's
loop"); the recipe as train.py runs it ("every callback"); and the recipe less each callback group in turn (``--<group>
null``), whose difference from "every callback" is that group's cost. Each: the median step time over ``--steps``
steps after ``--warmup``; the figures are medians over the repeats.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import torch

import common
from lit_gpt.assembly import CALLBACKS
from train_speed import NANOGPT_ARITHMETIC, StepClock


def lightning(args: argparse.Namespace, extra: list[str]) -> float:
    """Median seconds per step of the recipe under Lightning's Trainer with ``extra`` options."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.warmup + args.steps, workdir, [*args.overrides, *extra])
        clock = StepClock(args.warmup, args.steps)
        cli.trainer.callbacks.append(clock)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            cli.trainer.fit(cli.model, cli.datamodule)
    return statistics.median(b - a for a, b in zip(clock.times, clock.times[1:]))


def bare(args: argparse.Namespace) -> float:
    """The same model, batches, optimizer, schedule and clipping in a plain PyTorch loop."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.warmup + args.steps, workdir, args.overrides)
    module, data, clip = cli.model, cli.datamodule, cli.trainer.gradient_clip_val
    module.trainer = data.trainer = cli.trainer  # what configure_optimizers and the loader ask of it (step 0, rank 0)
    module.configure_model()  # compiled where the Trainer would compile it
    data.setup("fit")
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    module.train()
    times = []
    for step, (x, y) in enumerate(data.train_dataloader()):
        _, loss = module.model(x, y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if step >= args.warmup:
            times.append(time.perf_counter())
        if step == args.warmup + args.steps:
            break
    return statistics.median(b - a for a, b in zip(times, times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="the recipe to time")
    parser.add_argument("--nanogpt_arithmetic", action="store_true", help="with " + " ".join(NANOGPT_ARITHMETIC))
    parser.add_argument("--warmup", type=int, default=10, help="steps before the clock starts")
    parser.add_argument("--steps", type=int, default=60, help="steps timed in each run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every variant, interleaved")
    args = parser.parse_args()
    args.overrides = NANOGPT_ARITHMETIC if args.nanogpt_arithmetic else []
    print(common.machine_line(), flush=True)
    none = [arg for name in CALLBACKS for arg in (f"--{name}", "null")] + ["--trainer.logger", "false"]
    variants = {"bare PyTorch loop": None, "Lightning's loop": none, "every callback": []}
    variants.update({f"less {name}": [f"--{name}", "null"] for name in CALLBACKS})
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, extra in variants.items():
            seconds[name].append(bare(args) if extra is None else lightning(args, extra))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    base, full = median["bare PyTorch loop"], median["every callback"]
    print(f"{args.config}{' (nanoGPT arithmetic)' if args.nanogpt_arithmetic else ''}: {args.steps} steps after "
          f"{args.warmup}, median of {args.repeats} interleaved rounds")
    for name in ("bare PyTorch loop", "Lightning's loop", "every callback"):
        print(f"  {name:18s} {median[name] * 1e3:7.2f} ms/step   speed {base / median[name]:.3f} of the bare loop")
    print("  cost of each group (every callback - less it), ms/step:")
    for name in CALLBACKS:
        print(f"    {name:20s} {(full - median[f'less {name}']) * 1e3:+6.2f}")


if __name__ == "__main__":
    main()
