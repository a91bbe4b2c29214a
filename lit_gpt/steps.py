"""One convention for steps, asked by every callback: which optimizer step a training batch belongs to, whether the
batch completes it, and whether that step's metrics reach the logger.

Steps are 0-based: step ``s`` runs while ``trainer.global_step == s`` and is done once it reads ``s + 1``. With
``accumulate_grad_batches`` K, a step is K batches and only the K-th steps the optimizer. Checkpoints are written
only between optimizer steps, so the batch index (which a resumed run continues) is a multiple of K at every step's
start, on one device or N.
"""

import lightning as L


def completes_step(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether training batch ``batch_idx`` is the last of its optimizer step (every batch, without accumulation)."""
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0


def step_of_batch(trainer: L.Trainer, batch_idx: int) -> int:
    """In ``on_train_batch_end``: the optimizer step that batch ``batch_idx`` belongs to (``global_step`` has already
    moved on when the batch completed the step)."""
    return trainer.global_step - 1 if completes_step(trainer, batch_idx) else trainer.global_step


def is_log_step(trainer: L.Trainer, step: int) -> bool:
    """Whether Lightning writes the metrics of optimizer step ``step`` to the logger: every ``log_every_n_steps``."""
    return (step + 1) % trainer.log_every_n_steps == 0


def every_n_done(trainer: L.Trainer, n: int) -> bool:
    """In ``on_train_batch_end`` of a batch that completed its step: whether that is step ``n``, ``2n``, ... (counted
    from 1: ``trainer.global_step`` after it)."""
    return n > 0 and trainer.global_step % n == 0


def validation_follows(trainer: L.Trainer) -> bool:
    """In ``on_train_batch_end``: whether Lightning runs a step-based validation right after this training batch."""
    if not trainer.enable_validation or trainer.check_val_every_n_epoch is not None:
        return False
    interval = trainer.val_check_batch  # training batches between validations
    return isinstance(interval, int) and (trainer.fit_loop.total_batch_idx + 1) % interval == 0


def logged_step_done(trainer: L.Trainer, batch_idx: int) -> bool:
    """In ``on_train_batch_end``: whether the batch completed an optimizer step whose metrics reach the logger (where
    processes meet anyway, and where the logger reads values off the device)."""
    return completes_step(trainer, batch_idx) and is_log_step(trainer, trainer.global_step - 1)
