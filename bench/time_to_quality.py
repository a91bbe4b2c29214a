"""Time to quality: a recipe of ours against nanoGPT's, side by side, interleaved, repeated, from the process start.

    python bench/time_to_quality.py [--config configs/shakespeare_char_cpu.yaml] [--repeats 2] [--target 1.90]

Ours: ``python train.py fit --config CONFIG`` with the ``Timeline`` callback below; its time is the wall time from
the process start to the end of the first validation with ``val_loss`` <= target (whole validation split); its
start-up is the time from the process start to the first optimizer step. nanoGPT: its unchanged ``train.py`` (from
../shared/anchors/nanoGPT; left out where that folder is missing), with ANCHOR.md's CPU command for our CPU recipe and
its own GPU recipe otherwise, every output line time-stamped; it reaches 1.90 only at its last evaluation (2000: 1.898
on our whole-split metric; its own 20-batch estimate is noisier), so its time is the process start to its final
evaluation. Also printed: nanoGPT's first evaluation whose own estimate is <= target. The two run one after the other
in each repeat, in alternating order; the ratio is ours / nanoGPT per repeat.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

import common


class Timeline(Callback):
    """Writes to ``path`` (JSON) the clock time of the first optimizer step and of the end of every validation, with
    its val_loss; on CUDA also the peak memory. The GPU is synchronized at these few points only."""

    def __init__(self, path: str) -> None:
        self.path, self.record = Path(path), {"first_step_unix_time": None, "validations": []}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.record["first_step_unix_time"] is None:
            common.sync(trainer.strategy.root_device)
            self.record["first_step_unix_time"] = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        common.sync(trainer.strategy.root_device)
        self.record["validations"].append({"step": trainer.global_step, "unix_time": time.time(),
                                           "val_loss": float(trainer.callback_metrics["val_loss"])})
        self.record["best_val_loss"] = min(v["val_loss"] for v in self.record["validations"])
        if torch.cuda.is_available():
            self.record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.path.write_text(json.dumps(self.record))


def ours(workdir: Path, config: str, target: float, extra: list[str]) -> dict:
    timeline = workdir / "timeline.json"
    callback = {"class_path": "time_to_quality.Timeline", "init_args": {"path": str(timeline)}}
    cmd = [sys.executable, "train.py", "fit", "--config", config, "--trainer.enable_progress_bar", "false",
           "--trainer.logger.init_args.save_dir", str(workdir / "runs"), f"--trainer.callbacks+={json.dumps(callback)}",
           *extra]
    start = time.time()
    subprocess.run(cmd, cwd=common.ROOT, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": f"{common.ROOT}:{common.ROOT / 'bench'}"})
    record = json.loads(timeline.read_text())
    reached = next((v for v in record["validations"] if v["val_loss"] <= target), None)
    return {"seconds": reached["unix_time"] - start if reached else None, "step": reached and reached["step"],
            "startup": record["first_step_unix_time"] - start, "best": record["best_val_loss"],
            "peak_memory_gib": record.get("peak_memory_gib"), "wall": time.time() - start}


def nanogpt(workdir: Path, cpu: bool, target: float, overrides: list[str]) -> dict:
    folder = common.nanogpt_copy(workdir)
    cmd = common.nanogpt_command(*overrides) if cpu else \
        [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py", *overrides]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    evals = []
    for line in proc.stdout:
        if line.startswith("step ") and "val loss" in line:  # "step 250: train loss 2.0, val loss 2.1"
            evals.append((int(line.split()[1].rstrip(":")), float(line.rsplit(" ", 1)[1]), time.time() - start))
    proc.wait()
    first = next((e for e in evals if e[1] <= target), None)
    return {"seconds": evals[-1][2], "step": evals[-1][0], "own_estimate": evals[-1][1],
            "first_own_estimate_at_target": first and {"step": first[0], "seconds": first[2]},
            "wall": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="our recipe")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs")
    parser.add_argument("--target", type=float, default=1.90, help="the val_loss to reach")
    parser.add_argument("--nanogpt", default="", help="overrides of nanoGPT's command, e.g. '--max_iters=10'")
    args, extra = parser.parse_known_args()  # anything else is an override of our recipe
    print(common.machine_line(), flush=True)
    cpu = "shakespeare_char_cpu" in args.config or not torch.cuda.is_available()  # its CPU command
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            result = {}
            for side in (["ours", "nanogpt"] if repeat % 2 == 0 else ["nanogpt", "ours"]):
                if side == "ours":
                    result["ours"] = ours(Path(tmp) / f"ours{repeat}", args.config, args.target, extra)
                elif common.nanogpt_available():
                    result["nanogpt"] = nanogpt(Path(tmp), cpu, args.target, shlex.split(args.nanogpt))
            print(json.dumps(result), flush=True)
            pairs.append(result)
    ours_s = [p["ours"]["seconds"] for p in pairs]
    reached = ", ".join(f"{s:.1f}" if s else "never" for s in ours_s)
    startup = ", ".join(format(p["ours"]["startup"], ".1f") for p in pairs)
    print(f"ours: {args.target} reached at steps {[p['ours']['step'] for p in pairs]}, after {reached} s from the "
          f"process start (first step after {startup} s)")
    if all("nanogpt" in p for p in pairs):
        nano_s = [p["nanogpt"]["seconds"] for p in pairs]
        ratios = [o / n for o, n in zip(ours_s, nano_s) if o]
        print(f"nanoGPT: final evaluation (step {pairs[0]['nanogpt']['step']}) after "
              f"{', '.join(f'{s:.1f}' for s in nano_s)} s")
        if ratios:
            print(f"ours / nanoGPT: median {statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})")
    else:
        print(f"nanoGPT left out: {common.NANOGPT} is missing")


if __name__ == "__main__":
    main()
