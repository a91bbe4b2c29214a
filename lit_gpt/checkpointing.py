"""Crash-safe checkpoints: written beside their final path and renamed into place; ``last.ckpt`` kept current.

Lightning's own atomic save writes its temporary file to ``$TMPDIR`` and then moves it; when ``$TMPDIR`` is on another
filesystem than the run directory, that move is a copy, and a ``kill -9`` during the copy leaves a half-written
``last.ckpt``. Writing the temporary file in the checkpoint's own directory makes the final rename atomic.
"""

import os
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to ``.<name>.tmp-<pid>`` in the target directory, fsync, then ``os.replace`` onto the final name.

    A reader sees either the old complete file or the new complete file, never a partial one. Remote paths
    (``s3://`` and the like) are left to Lightning's default.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # never matches last*.ckpt
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, path)  # atomic on one filesystem
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)


class PeriodicCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps and once more when training ends.

    Lightning's ModelCheckpoint saves ``last.ckpt`` only at its own triggers, so a run whose ``max_steps`` is not a
    multiple of the interval would end with a stale ``last.ckpt``; this subclass also writes it in ``on_train_end``.
    It is not written when training stops on an error, so the last good checkpoint stays.

    At a step where a validation follows and another checkpoint callback writes ``last.ckpt`` after it (the
    ``checkpoint`` one, by default), this one does not write: one write instead of two, and the file then holds the
    state after the validation, so a run resumed from it does not skip that validation.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._validation_writes_last(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _validation_writes_last(self, trainer: L.Trainer) -> bool:
        """Whether a step-based validation runs right after this training step and a metric-monitoring checkpoint
        callback that writes ``last.ckpt`` to the same directory saves when it ends."""
        if not trainer.enable_validation or trainer.check_val_every_n_epoch is not None:
            return False
        interval = trainer.val_check_batch  # training batches between validations
        if not isinstance(interval, int) or (trainer.fit_loop.total_batch_idx + 1) % interval != 0:
            return False
        return any(callback is not self and callback.save_last and callback.monitor is not None
                   and callback.dirpath == self.dirpath for callback in trainer.checkpoint_callbacks)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self.dirpath is not None and not trainer.sanity_checking:
            trainer.save_checkpoint(os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))


class ResumedLogStep(Callback):
    """Keeps the step that metrics are logged at equal to the optimizer step, also after a resume.

    Lightning logs at ``fit_loop.epoch_loop._batches_that_stepped``. A run resumed from a checkpoint written after the
    last step of a validation interval (a run that stopped at ``max_steps``, a multiple of ``val_check_interval``)
    replays that step's end, which counts it a second time: every point the resumed run logs lands one step late
    (Lightning 2.6). Setting the counter to ``global_step`` before each step, ahead of every other callback (the
    learning-rate monitor logs in ``on_train_batch_start``), puts them back. It is the same number in a run that
    never stopped, with or without gradient accumulation.
    """

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
