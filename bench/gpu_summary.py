"""The figures of one gpu_check.sh step as JSON (for bench/results/): read from the files that step wrote.

    python bench/gpu_summary.py recipe OUT_DIR     # timeline.json + TensorBoard events of our recipe
    python bench/gpu_summary.py nanogpt OUT_DIR    # nanoGPT's time-stamped log

Both report the same definitions: ``time_to_target_s`` from the start of the first optimizer step to the end of the
first evaluation at or below the target (1.47), and ``process_to_target_s`` from the process start (start-up and
compilation included). nanoGPT's losses are its own estimates (200 random batches per split); ours are whole-split.
"""

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

TARGET = 1.47


def environment(out: Path) -> dict[str, Any]:
    env = (out / "env.txt").read_text() if (out / "env.txt").is_file() else ""
    torch_line = next((line for line in env.splitlines() if line.startswith("torch ")), "")
    return {"date": env.splitlines()[0] if env else None, "versions_and_device": torch_line}


def recipe(out: Path) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    timeline = json.loads((out / "timeline.json").read_text())
    events = EventAccumulator(str(out / "runs" / "recipe"), size_guidance={"scalars": 0}).Reload()

    def late_median(tag: str) -> Optional[float]:  # the second half of the run: past compilation and warm-up
        if tag not in events.Tags()["scalars"]:
            return None
        values = [e.value for e in events.Scalars(tag)]
        return statistics.median(values[len(values) // 2:])

    fit_time = (out / "fit.time").read_text()
    wall, started = re.search(r"ms=(\d+)", fit_time), re.search(r"start=(\d+)", fit_time)
    reached = next((v for v in timeline["validations"] if v["val_loss"] <= TARGET), None)
    return {
        **environment(out),
        "command": "python train.py fit --config configs/shakespeare_char.yaml (bench/gpu_check.sh recipe)",
        "time_to_target_s": timeline.get("time_to_target_s"),
        "steps_to_target": timeline.get("steps_to_target"),
        "process_to_target_s": reached["unix_time"] - int(started.group(1)) / 1000 if reached and started else None,
        "compile_warmup_s": timeline.get("first_step_s"),
        "best_val_loss": timeline.get("best_val_loss"),
        "fit_s": timeline.get("fit_s"),
        "process_wall_s": int(wall.group(1)) / 1000 if wall else None,
        "peak_memory_gib": timeline.get("peak_memory_gib"),
        "tokens_per_s": late_median("train/device/items_per_sec"),
        "mfu": late_median("train/device/mfu"),
        "validations": timeline.get("validations"),
    }


def nanogpt(out: Path) -> dict[str, Any]:
    lines = (out / "train.log").read_text().splitlines()
    evals, iters = [], []
    for line in lines:
        stamp, _, text = line.strip().partition(" ")
        if m := re.match(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", text):
            evals.append({"step": int(m[1]), "val_loss": float(m[3]), "t": float(stamp)})
        elif m := re.match(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms, mfu (-?[\d.]+)%", text):
            iters.append({"iter": int(m[1]), "ms": float(m[2]), "mfu": float(m[3]) / 100, "t": float(stamp)})
    reached = next((e for e in evals if e["val_loss"] <= TARGET), None)
    first_iter = iters[0]["t"] - iters[0]["ms"] / 1000 if iters else None  # the start of iteration 0
    late = iters[len(iters) // 2:]
    return {
        **environment(out),
        "command": "python train.py config/train_shakespeare_char.py (nanoGPT, unchanged; bench/gpu_check.sh nanogpt)",
        "time_to_target_s": reached["t"] - first_iter if reached and first_iter is not None else None,
        "steps_to_target": reached["step"] if reached else None,
        "process_to_target_s": reached["t"] if reached else None,
        "compile_warmup_s": iters[0]["ms"] / 1000 if iters else None,
        "best_val_loss": min((e["val_loss"] for e in evals), default=None),
        "process_wall_s": float(lines[-1].split()[0]) if lines else None,
        "ms_per_iter": statistics.median(i["ms"] for i in late) if late else None,
        "mfu": statistics.median(i["mfu"] for i in late) if late else None,
        "evals": evals,
    }


if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"recipe": recipe, "nanogpt": nanogpt}[kind](out), indent=1))
