"""A callback that times a run for the time-to-quality figures: when each validation ended and what it scored.

    PYTHONPATH=bench python train.py fit --config configs/shakespeare_char.yaml \
        '--trainer.callbacks+={"class_path": "timeline.Timeline", "init_args": {"path": "timeline.json", "target": 1.47}}'

Writes a JSON file when training ends (and after every validation, so a run cut short keeps what it measured):
  - ``first_step_start``: seconds from the Trainer's fit start to the start of the first optimizer step
    (``first_step_unix_time``: its clock time, for start-up measured from the process start);
  - ``first_step_s``: how long the first step took (on a compiled model: mostly compilation);
  - ``validations``: a row per validation: step, val_loss, ``train_s`` (seconds since the start of the first step,
    validation time included) and ``seconds`` (that validation's own time, the monitor's samples included);
  - ``time_to_target_s``: ``train_s`` of the first validation with val_loss <= target (null if none reached it);
  - ``best_val_loss``, ``fit_s`` (whole fit, start-up included), ``steps``, ``peak_memory_gib`` on CUDA.
Timings synchronize the GPU first, only at these few points, so they see the work done, not just launched.
"""

import json
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class Timeline(Callback):
    """Record validation times and losses to ``path`` (JSON); ``target`` is the val_loss whose first reach is timed.

    Args:
        path: JSON file to write.
        target: The val_loss to time (the first validation at or below it).
    """

    def __init__(self, path: str, target: float = 1.47) -> None:
        self.path, self.target = Path(path), target
        self.record: dict[str, Any] = {"target": target, "validations": []}
        self._fit_start = self._first_step = self._val_start = None
        self._step_start: Optional[float] = None

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self._now(trainer)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._first_step is None:
            self._first_step = self._step_start = self._now(trainer)
            self.record["first_step_start"] = self._first_step - self._fit_start
            self.record["first_step_unix_time"] = time.time()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._step_start is not None:
            self.record["first_step_s"] = self._now(trainer) - self._step_start
            self._step_start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = self._now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._first_step is None:
            return
        end = self._now(trainer)  # after every callback's on_validation_end that ran before this one
        loss = float(trainer.callback_metrics["val_loss"])
        self.record["validations"].append({"step": trainer.global_step, "val_loss": loss,
                                           "train_s": end - self._first_step, "seconds": end - self._val_start,
                                           "unix_time": time.time()})
        if loss <= self.target and self.record.get("time_to_target_s") is None:
            self.record["time_to_target_s"] = end - self._first_step
            self.record["steps_to_target"] = trainer.global_step
        self._write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["fit_s"] = self._now(trainer) - self._fit_start
        self.record["steps"] = trainer.global_step
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        losses = [v["val_loss"] for v in self.record["validations"]]
        self.record["best_val_loss"] = min(losses) if losses else None
        self.record.setdefault("time_to_target_s", None)
        if torch.cuda.is_available():
            self.record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=1))
