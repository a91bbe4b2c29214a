"""What a checkpoint write costs: a recipe's full checkpoint (weights, AdamW state, schedule, RNG, vocabulary) written
the way training writes it (Trainer.save_checkpoint through the atomic same-directory save), beside the recipe's own
step time, measured in the same run.

    python bench/checkpoint_speed.py --config configs/shakespeare_char.yaml [--saves 5] [--steps 30] [--data.path=FILE]

Trains ``--steps`` steps of the recipe (validation off, so the AdamW state exists and the step time is measured),
then times ``--saves`` writes of ``last.ckpt`` into a temporary directory. Prints the file size, the median write time,
the median step time, and what share of training time one write every N steps, or every S seconds, costs.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_gpt.cli import GPTLightningCLI
from lit_gpt.data import CharDataModule
from lit_gpt.module import LitGPT


class StepTimer(Callback):
    """Seconds per training step over the second half of the run (past compilation and warm-up)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    def per_step(self) -> float:
        half = self.starts[len(self.starts) // 2:]
        return (half[-1] - half[0]) / (len(half) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char.yaml", help="the recipe")
    parser.add_argument("--saves", type=int, default=5, help="checkpoint writes to time (the median is reported)")
    parser.add_argument("--steps", type=int, default=30, help="training steps before the writes")
    args, overrides = parser.parse_known_args()  # anything else is a recipe override, e.g. --data.path=FILE
    with tempfile.TemporaryDirectory() as workdir:
        timer = StepTimer()
        cli = GPTLightningCLI(
            LitGPT, CharDataModule, run=False, save_config_kwargs={"overwrite": True},
            args=["--config", args.config, "--trainer.max_steps", str(args.steps), "--trainer.limit_val_batches", "0",
                  "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
                  "--trainer.logger.init_args.save_dir", workdir, "--periodic_checkpoint.every_n_train_steps",
                  str(10**9), *overrides])
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
        path = Path(workdir) / "timed" / "last.ckpt"
        times = []
        for _ in range(args.saves):
            start = time.perf_counter()
            cli.trainer.save_checkpoint(path)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
    write, step = statistics.median(times), timer.per_step()
    device = cli.trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"recipe {args.config} on {name} ({cli.trainer.precision}), torch {torch.__version__}")
    print(f"checkpoint {size / 1e6:.1f} MB; write {write * 1e3:.1f} ms (median of {args.saves}: "
          f"{', '.join(f'{t * 1e3:.1f}' for t in times)} ms); training step {step * 1e3:.2f} ms")
    for every in (100, 250, 1000):
        print(f"  one write every {every:4d} steps: {write / (write + every * step):6.2%} of training time")
    for seconds in (10, 60, 300):
        print(f"  one write every {seconds:3d} s:     {write / (write + seconds):6.2%} of training time")


if __name__ == "__main__":
    main()
