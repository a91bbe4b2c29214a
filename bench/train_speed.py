"""Training speed: Lightning (Trainer.fit with the recipe's module, data, callbacks and logging) vs. a bare PyTorch
loop over the same GPT, windows, AdamW and schedule, side by side in one run.

    python bench/train_speed.py --config configs/shakespeare_char_cpu.yaml [--steps 50] [--repeats 5]

Each side is timed for N and 5N optimizer steps from a fresh start; (t(5N) - t(N)) / 4N is the steady per-step time,
so start-up (building, the first-step warm-up, compilation) cancels. Validation is off on both sides
(limit_val_batches=0); everything else of the recipe stays on in the Lightning run: progress bar, TensorBoard logging,
LearningRateMonitor, throughput (TokenThroughput), the gradient norm, periodic checkpoints. Prints tokens/s of
both and the ratio.
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import torch

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


def time_lightning(config: str, steps: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        cli = build(config, steps, workdir, extra)
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
        model = module.model.to(device).train()
        module.trainer = None
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


def per_step_times(config: str, steps: int, repeats: int, extra: list[str]) -> list[tuple[float, float]]:
    """(Lightning, bare) steady per-step seconds, (t(5N) - t(N)) / 4N, for each repeat. The two sides run back to
    back within a repeat, in alternating order, so that the slow drifts of a shared machine hit both alike."""
    pairs = []
    for repeat in range(repeats):
        sides = [time_lightning, time_bare] if repeat % 2 == 0 else [time_bare, time_lightning]
        per_step = {}
        for fn in sides:
            short = fn(config, steps, extra)
            per_step[fn] = (fn(config, 5 * steps, extra) - short) / (4 * steps)
        pairs.append((per_step[time_lightning], per_step[time_bare]))
    return pairs


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
    pairs = per_step_times(args.config, args.steps, args.repeats, args.overrides)
    lightning, bare = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    ratios = [b / l for l, b in pairs]
    print(f"bare PyTorch loop   {tokens / bare:10.0f} tokens/s   {bare * 1e3:7.2f} ms/step")
    print(f"Lightning fit       {tokens / lightning:10.0f} tokens/s   {lightning * 1e3:7.2f} ms/step")
    print(f"Lightning / bare    {statistics.median(ratios):.3f} (median of the repeats' ratios: "
          f"{', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
