"""Time to quality from the process start, a recipe of ours against nanoGPT's unchanged train.py, interleaved and
repeated; any other option overrides our recipe. Method: docs/benchmarks.md.

    python bench/time_to_quality.py [--config configs/shakespeare_char_cpu.yaml] [--repeats 2] [--target 1.90]
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
    """Writes to ``path`` (JSON) the time of the first optimizer step and of the end of every validation with its
    val_loss, and on CUDA the peak memory; the device is synchronised at these points only."""

    def __init__(self, path: str) -> None:
        self.path, self.record = Path(path), {"first_step": None, "validations": []}

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if self.record["first_step"] is None:
            common.clock(trainer.strategy.root_device)
            self.record["first_step"] = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        common.clock(trainer.strategy.root_device)
        val_loss = float(trainer.callback_metrics["val_loss"])
        self.record["validations"].append((trainer.global_step, time.time(), val_loss))
        if torch.cuda.is_available():
            self.record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.path.write_text(json.dumps(self.record))


def timed_fit(config: str, workdir: Path, extra: list[str]) -> tuple[dict, float]:
    """``train.py fit`` of ``config`` with ``extra``, its run in ``workdir``: the Timeline's record and the time.time()
    of the process start."""
    workdir.mkdir(parents=True)
    callback = {"class_path": "time_to_quality.Timeline", "init_args": {"path": str(workdir / "timeline.json")}}
    start = time.time()
    subprocess.run([sys.executable, "train.py", "fit", "--config", config, "--trainer.enable_progress_bar", "false",
                    "--trainer.logger.init_args.save_dir", str(workdir), f"--trainer.callbacks+={json.dumps(callback)}",
                    *extra], cwd=common.ROOT, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": f"{common.ROOT}{os.pathsep}{common.ROOT / 'bench'}"})
    return json.loads((workdir / "timeline.json").read_text()), start


def ours(workdir: Path, args: argparse.Namespace) -> dict:
    record, start = timed_fit(args.config, workdir, args.extra)
    step, at = next(((s, t) for s, t, loss in record["validations"] if loss <= args.target), (None, None))
    return {"seconds": at and at - start, "step": step, "startup": record["first_step"] - start,
            "best": min(loss for *_, loss in record["validations"]), "peak_memory_gib": record.get("peak_memory_gib"),
            "validations": [(s, round(t - start, 1), round(loss, 4)) for s, t, loss in record["validations"]],
            "total": time.time() - start}


def nanogpt(workdir: Path, args: argparse.Namespace) -> dict:
    folder = common.nanogpt_copy(workdir.parent)  # prepared once, outside the timed part
    start = time.time()
    proc = subprocess.Popen(common.nanogpt_command(*shlex.split(args.nanogpt), cpu=args.cpu), cwd=folder, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""})
    evals = [(int(line.split()[1].rstrip(":")), float(line.rsplit(" ", 1)[1]), time.time() - start)
             for line in proc.stdout if line.startswith("step ") and "val loss" in line]  # "step N: ..., val loss X"
    proc.wait()
    first = next((e for e in evals if e[1] <= args.target), None)
    return {"seconds": evals[-1][2], "step": evals[-1][0], "own_estimate": evals[-1][1],
            "first_own_estimate_at_target": first and {"step": first[0], "seconds": first[2]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="our recipe")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs")
    parser.add_argument("--target", type=float, default=1.90, help="the val_loss to reach")
    parser.add_argument("--nanogpt", default="", help="overrides of nanoGPT's command, e.g. '--max_iters=10'")
    parser.add_argument("--keep", metavar="DIR", help="keep the runs (our checkpoints) in DIR, a new folder")
    args, args.extra = parser.parse_known_args()
    args.cpu = "shakespeare_char_cpu" in args.config or not torch.cuda.is_available()
    print(common.machine_line(), flush=True)
    sides = {"ours": ours, "nanogpt": nanogpt} if common.NANOGPT.is_dir() else {"ours": ours}
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            pairs.append({side: sides[side](Path(tmp) / f"{side}{repeat}", args) for side in order})
            print(json.dumps(pairs[-1]), flush=True)
    reached = ", ".join(f"{p['ours']['seconds']:.1f}" if p["ours"]["seconds"] else "never" for p in pairs)
    print(f"ours: {args.target} reached at steps {[p['ours']['step'] for p in pairs]}, after {reached} s from the "
          f"process start (first step after {', '.join(format(p['ours']['startup'], '.1f') for p in pairs)} s)")
    if "nanogpt" not in sides:
        return print(f"nanoGPT left out: {common.NANOGPT} is missing")
    print(f"nanoGPT: final evaluation (step {pairs[0]['nanogpt']['step']}) after "
          f"{', '.join(format(p['nanogpt']['seconds'], '.1f') for p in pairs)} s")
    ratios = [p["ours"]["seconds"] / p["nanogpt"]["seconds"] for p in pairs if p["ours"]["seconds"]]
    print(f"ours / nanoGPT: median {statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})"
          if ratios else "ours / nanoGPT: ours never reached the target")


if __name__ == "__main__":
    main()
