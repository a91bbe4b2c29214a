"""Where a training step's time goes: torch.profiler over a few steps of a recipe, as Lightning runs it.

    python bench/profile_steps.py --config configs/shakespeare_char.yaml --out DIR [--skip 30] [--steps 20]

Trains ``--skip`` steps untraced (compilation and warm-up), then traces ``--steps`` steps (CPU and CUDA activities)
and writes ``DIR/trace.json.gz`` (open it in https://ui.perfetto.dev or chrome://tracing) and prints the operators
that took the most time, on the device and on the host. Validation is off.
"""

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.profiler import ProfilerActivity, profile

import common


class StepProfiler(Callback):
    """Start the profiler before step ``skip`` and stop it after step ``skip + steps - 1``."""

    def __init__(self, skip: int, steps: int) -> None:
        self.skip, self.steps = skip, steps
        self.prof: Optional[profile] = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.skip:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=activities)
            self.prof.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.prof is not None and trainer.global_step == self.skip + self.steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char.yaml", help="the recipe")
    parser.add_argument("--out", required=True, help="directory for trace.json.gz")
    parser.add_argument("--skip", type=int, default=30, help="untraced steps first (compilation, warm-up)")
    parser.add_argument("--steps", type=int, default=20, help="traced steps")
    args, overrides = parser.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(common.machine_line())
    profiler = StepProfiler(args.skip, args.steps)
    with tempfile.TemporaryDirectory() as workdir:
        cli = common.build_cli(args.config, args.skip + args.steps, workdir,
                               ["--trainer.enable_progress_bar", "false", *overrides])
        cli.trainer.callbacks.append(profiler)
        cli.trainer.fit(cli.model, cli.datamodule)
    trace = out / "trace.json"
    profiler.prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(str(trace) + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(f"{args.steps} steps of {args.config}, after {args.skip} untraced; sorted by {sort}")
    print(profiler.prof.key_averages().table(sort_by=sort, row_limit=30))


if __name__ == "__main__":
    main()
