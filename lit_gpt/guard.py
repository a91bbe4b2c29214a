"""Stop on a non-finite training loss, naming the first bad step, and never checkpoint the weights it touched."""

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_gpt.errors import LitGPTError
from lit_gpt.steps import logged_step_done, step_of_batch


class NonFiniteGuard(Callback):
    """Remembers, on the device (no host sync per step), the first optimizer step whose training loss was not finite,
    and reads it on the steps that log and before every checkpoint: training stops with one line that names the step,
    and ``last.ckpt``, written before it, stays. Several processes agree on it (one reduce), so they stop together.
    """

    def __init__(self) -> None:
        self._first_bad: Optional[torch.Tensor] = None  # () on the device: -1, or the first non-finite step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad = torch.tensor(-1, device=pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bad = ~torch.isfinite(outputs["loss"].detach())
        self._first_bad = torch.where(bad & (self._first_bad < 0), step_of_batch(trainer, batch_idx), self._first_bad)
        if logged_step_done(trainer, batch_idx):
            self.check(trainer)  # once per logged optimizer step: on its last batch, with gradient accumulation

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self._first_bad is not None:
            self.check(trainer)  # never write weights that a non-finite step has touched

    def check(self, trainer: L.Trainer) -> None:
        """Raise, naming the first step whose train_loss was not finite on any process."""
        first_bad = trainer.strategy.reduce(self._first_bad.float(), reduce_op="max")
        if first_bad >= 0:
            raise LitGPTError(
                f"train_loss is not finite at step {int(first_bad)}; training stopped, and the last checkpoint was "
                f"kept. Try a lower --model.learning_rate or --trainer.gradient_clip_val"
            )
