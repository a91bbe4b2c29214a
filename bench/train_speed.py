"""Training speed: Lightning (Trainer.fit with the recipe's module, data, callbacks and logging) vs. a bare PyTorch
loop over the same GPT, windows, AdamW and schedule, side by side in one run.

    python bench/train_speed.py --config configs/shakespeare_char_cpu.yaml [--steps 50] [--repeats 5]

After one untimed run of each side (it fills the compiler's caches), each side is timed for N and 5N optimizer steps
from a fresh start; (t(5N) - t(N)) / 4N is the steady per-step time, so start-up (building, the first-step warm-up,
compilation) cancels. Validation is off on both sides
(limit_val_batches=0); everything else of the recipe stays on in the Lightning run: progress bar, TensorBoard logging,
LearningRateMonitor, throughput (TokenThroughput), the gradient norm, periodic checkpoints. A third side, Lightning
with no callbacks and no logger, shows what Lightning's loop itself costs. With the CPU recipe, a fourth side is
nanoGPT's own train.py (unchanged, read from ../shared/anchors/nanoGPT; left out where that folder is missing) with
its CPU command and the same model, block and batch, evaluation off (``--eval_interval`` past the run, so only its
iteration-0 estimate runs, which cancels), timed the same way as a process. Compare it with our AdamW:
``--model.optimizer adamw --model.learning_rate 1e-3 --model.min_lr 1e-4`` gives the same arithmetic per step.
Prints tokens/s of each, its ratio to the bare loop (median of the repeats' ratios, and each repeat), and the
recipe's per-step time over nanoGPT's.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import nanogpt_anchor
from lit_gpt.cli import GPTLightningCLI
from lit_gpt.data import CharDataModule, TrainWindows
from lit_gpt.module import LitGPT


def build(config: str, steps: int, workdir: str, extra: list[str]) -> GPTLightningCLI:
    args = ["--config", config, "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.logger.init_args.save_dir", workdir, *extra]
    return GPTLightningCLI(LitGPT, CharDataModule, run=False, args=args, save_config_kwargs={"overwrite": True})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_lightning(config: str, steps: int, extra: list[str], bare_trainer: bool = False) -> float:
    """Trainer.fit as the recipe runs it; with ``bare_trainer``, with no callbacks and no logger (Lightning's loop
    around our LightningModule and DataModule and nothing else: the floor of Lightning's own cost)."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = build(config, steps, workdir, extra)
        if bare_trainer:
            cli.trainer.callbacks[:] = []
            cli.trainer.loggers = []
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the bar runs, unseen
            start = time.perf_counter()
            cli.trainer.fit(cli.model, cli.datamodule)
            sync(cli.trainer.strategy.root_device)
            return time.perf_counter() - start


def time_bare(config: str, steps: int, extra: list[str]) -> float:
    """The same model, windows, optimizer, schedule, clipping and precision in a plain loop, nothing else."""
    with tempfile.TemporaryDirectory() as workdir:
        cli = build(config, steps, workdir, extra)  # for the same objects and settings only; its Trainer is not used
        trainer, module, data = cli.trainer, cli.model, cli.datamodule
        device = trainer.strategy.root_device
        start = time.perf_counter()
        module.trainer = trainer
        module.configure_model()  # the Lightning side's set-up: torch.compile and TF32 where the recipe uses them
        module.trainer = None
        model = module.model.to(device).train()
        opt_config = module.configure_optimizers()
        optimizer, schedule = opt_config["optimizer"], opt_config["lr_scheduler"]["scheduler"]
        windows = TrainWindows(data.train_data, data.block_size, data.batch_size, data.seed)
        bf16 = trainer.precision == "bf16-mixed"
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        clip = trainer.gradient_clip_val
        for step in range(steps):
            x, y = (t.to(device, non_blocking=True) for t in windows.batch(step))
            with autocast:
                _, loss = model(x, y)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
        sync(device)
        return time.perf_counter() - start


def time_lightning_floor(config: str, steps: int, extra: list[str]) -> float:
    return time_lightning(config, steps, extra, bare_trainer=True)


NANOGPT_NO_EVAL = ["--eval_iters=1", "--eval_interval=1000000", "--always_save_checkpoint=False"]  # only iter 0's
_nanogpt_dir: list[Path] = []


def time_nanogpt(config: str, steps: int, extra: list[str]) -> float:
    """nanoGPT's train.py for ``steps`` iterations (its loop runs iterations 0..max_iters), as a process."""
    if not _nanogpt_dir:
        _nanogpt_dir.append(nanogpt_anchor.prepared_copy(Path(tempfile.mkdtemp(prefix="nanogpt_"))))
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *nanogpt_anchor.CPU_COMMAND,
           *NANOGPT_NO_EVAL, f"--max_iters={steps - 1}", f"--lr_decay_iters={max(steps, 2000)}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=_nanogpt_dir[0], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ""})
    return time.perf_counter() - start


SIDES = {"bare": time_bare, "lightning": time_lightning, "floor": time_lightning_floor}


def per_step_times(config: str, steps: int, repeats: int, extra: list[str]) -> list[dict[str, float]]:
    """Steady per-step seconds, (t(5N) - t(N)) / 4N, of each side, for each repeat. The sides run back to back
    within a repeat, in an order that rotates between repeats, so that the slow drifts of a shared machine hit all
    alike."""
    for fn in SIDES.values():  # untimed: fills the compiler's caches, so that every timed run starts alike
        fn(config, steps, extra)
    results = []
    for repeat in range(repeats):
        names = list(SIDES)[repeat % len(SIDES):] + list(SIDES)[: repeat % len(SIDES)]
        per_step = {}
        for name in names:
            short = SIDES[name](config, steps, extra)
            per_step[name] = (SIDES[name](config, 5 * steps, extra) - short) / (4 * steps)
        results.append(per_step)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="the recipe to time")
    parser.add_argument("--steps", type=int, default=50, help="N: each side runs N and 5N steps")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the pair (the medians are reported)")
    args, overrides = parser.parse_known_args()  # anything else is a recipe override, e.g. --data.path=FILE
    args.overrides = overrides

    cli = build(args.config, 1, tempfile.gettempdir(), args.overrides)
    tokens = cli.datamodule.batch_size * cli.datamodule.block_size
    device = cli.trainer.strategy.root_device
    print(f"recipe {args.config}: {tokens} tokens per step, device {device}, precision {cli.trainer.precision}, "
          f"torch {torch.__version__}; N = {args.steps}, median of {args.repeats}")
    if "shakespeare_char_cpu" in args.config and nanogpt_anchor.available():
        SIDES["nanogpt"] = time_nanogpt
    else:
        print(f"nanoGPT left out: it runs with the CPU recipe only, from {nanogpt_anchor.NANOGPT}")
    results = per_step_times(args.config, args.steps, args.repeats, args.overrides)
    labels = {"bare": "bare PyTorch loop", "lightning": "Lightning, the recipe",
              "floor": "Lightning, no callbacks/logger", "nanogpt": "nanoGPT's train.py"}
    print(f"{'':32s} {'tokens/s':>9s} {'ms/step':>8s}  vs bare (median of the repeats' ratios; each repeat)")
    for name, label in labels.items():
        if name not in SIDES:
            continue
        per_step = statistics.median(r[name] for r in results)
        ratios = [r["bare"] / r[name] for r in results]
        print(f"{label:32s} {tokens / per_step:9.0f} {per_step * 1e3:8.2f}  {statistics.median(ratios):.3f} "
              f"({', '.join(f'{x:.3f}' for x in ratios)})")
    if "nanogpt" in SIDES:
        ratios = sorted(r["lightning"] / r["nanogpt"] for r in results)
        print(f"per-step time, the recipe / nanoGPT: median {statistics.median(ratios):.3f}, range "
              f"{ratios[0]:.3f}-{ratios[-1]:.3f} over {len(ratios)} repeats")


if __name__ == "__main__":
    main()
