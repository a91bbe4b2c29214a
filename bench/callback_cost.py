"""The cost per training step of each callback group a run adds, and of Lightning's own loop, beside a bare PyTorch
loop over the same model, batches, optimizer, schedule and gradient clipping, in one run.

    python bench/callback_cost.py [--config configs/shakespeare_char_cpu.yaml] [--nanogpt_arithmetic]
        [--warmup 10] [--steps 60] [--repeats 3]

Interleaved in every repeat: the bare loop, and the recipe as train.py runs it (validation off) with every hook of
every callback timed. A group's cost is the time in its per-step hooks (batch start and end, backward, optimizer
step, zero_grad) over the steps; Lightning's own is what remains of the recipe's step time beyond the bare loop and
the callbacks (its loop, the module's logging, the logger's writes). Each figure: the median over the repeats of the
median step (the hooks: of their mean per step) after ``--warmup``.
"""

import argparse
import logging
import statistics
import tempfile
import time

import torch
from lightning.pytorch.callbacks import Callback

import common
from lit_gpt.assembly import CALLBACKS
from train_speed import NANOGPT_ARITHMETIC, timed_fit, timing_parser


HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
         "on_before_optimizer_step", "on_before_zero_grad")  # the hooks a callback runs at every step


def timed_hooks(callback: Callback, spent: list[float]) -> None:
    """Wrap the per-step hooks ``callback``'s class defines so that their time adds up in ``spent``."""
    for hook in HOOKS:
        if getattr(type(callback), hook) is getattr(Callback, hook):
            continue
        real = getattr(callback, hook)

        def timed(*args, real=real, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(callback, hook, timed)


def lightning(args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """(median seconds per step, {callback group: seconds per step in its hooks}) of the recipe under the Trainer."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.warmup + args.steps, workdir, args.overrides)
        spent: dict[str, list[float]] = {}
        for callback in cli.trainer.callbacks:
            group = next((name for name, (cls, _) in CALLBACKS.items() if type(callback) is cls), None)
            if group is not None:
                timed_hooks(callback, spent.setdefault(group, [0.0]))
        seconds = timed_fit(cli, args)
    return seconds, {group: total[0] / cli.trainer.global_step for group, total in spent.items()}


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
    args = timing_parser(__doc__, warmup=10, steps=60, repeats=3).parse_args()
    args.overrides = NANOGPT_ARITHMETIC if args.nanogpt_arithmetic else []
    print(common.machine_line(), flush=True)
    for name in ("lightning.pytorch", "lightning.fabric", "lit_gpt"):  # each run's own lines would bury the figures
        logging.getLogger(name).setLevel(logging.WARNING)
    bare_times, full_times, hooks = [], [], {name: [] for name in CALLBACKS}
    for _ in range(args.repeats):
        bare_times.append(bare(args))
        seconds, groups = lightning(args)
        full_times.append(seconds)
        for name in CALLBACKS:
            hooks[name].append(groups.get(name, 0.0))
    base, full = statistics.median(bare_times), statistics.median(full_times)
    cost = {name: statistics.median(values) for name, values in hooks.items()}
    print(f"{args.config}{' (nanoGPT arithmetic)' if args.nanogpt_arithmetic else ''}: {args.steps} steps after "
          f"{args.warmup}, median of {args.repeats} interleaved rounds")
    print(f"  bare PyTorch loop      {base * 1e3:7.2f} ms/step")
    print(f"  the recipe's Trainer   {full * 1e3:7.2f} ms/step   speed {base / full:.3f} of the bare loop")
    print(f"    Lightning's own      {(full - base - sum(cost.values())) * 1e3:+7.2f} ms/step (loop, module's logging, "
          f"logger)")
    for name in CALLBACKS:
        print(f"    {name:20s} {cost[name] * 1e3:+7.2f} ms/step")


if __name__ == "__main__":
    main()
