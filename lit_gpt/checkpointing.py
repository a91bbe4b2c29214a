"""Crash-safe checkpoints: written beside their final path and renamed into place; ``last.ckpt`` kept current.

Lightning's own atomic save writes its temporary file to ``$TMPDIR`` and then moves it; when ``$TMPDIR`` is on another
filesystem than the run directory, that move is a copy, and a ``kill -9`` during the copy leaves a half-written
``last.ckpt``. Writing the temporary file in the checkpoint's own directory makes the final rename atomic.
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from lit_gpt.errors import (
    CheckpointWriteError, LitGPTError, StartupInterrupted, StoppedAtOnce, TrainingStopped, failed_write, signal_name,
)
from lit_gpt.files import load_file, on_windows, replaced_atomically
from lit_gpt.steps import completes_step, every_n_done, logged_step_done, validation_follows

clock = time.monotonic  # the periodic checkpoint's clock (a test replaces it with a fake one)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to ``.<name>.tmp-<pid>`` in the target directory, fsync, then ``os.replace`` onto the final name.

    A reader sees either the old complete file or the new complete file, never a partial one. Remote paths
    (``s3://`` and the like) are left to Lightning's default.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replaced_atomically(path) as f:  # the temporary name never matches last*.ckpt
                torch.save(checkpoint, f)
        except OSError as err:  # disk full, quota, permissions: the earlier file at `path` is untouched
            raise CheckpointWriteError(path, err) from None
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut. Windows cannot open a folder as a file (and its renames are
    journalled by NTFS): nothing to do there."""
    if on_windows():
        return
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checkpoint_step(path: Path) -> Optional[int]:
    """The optimizer step a checkpoint file holds, or None if it cannot be read."""
    try:
        return int(load_file(path)["global_step"])
    except Exception:
        return None


def run_checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where a run's checkpoints go, by Lightning's own rule for a ModelCheckpoint without a dirpath:
    ``<save_dir>/<name>/<version>/checkpoints`` of the first logger, else ``<default_root_dir>/checkpoints``."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "checkpoints"
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version / "checkpoints"


class PeriodicCheckpoint(Callback):
    """Keeps ``last.ckpt`` fresh, so that a crash loses at most one interval and a signal loses nothing.

    ``last.ckpt`` is written:
    - after every validation, whether or not ``val_loss`` improved (so a resumed run neither repeats nor skips it);
    - after a training step once ``every_n_seconds`` have passed since the last write, or every
      ``every_n_train_steps`` steps, whichever comes first (a step followed by a validation leaves it to the
      validation: one write, not two);
    - when training ends (``max_steps`` need not be a multiple of anything, and ``max_time`` ends with a fresh file);
    - on SIGINT (Ctrl-C, a notebook's interrupt) or SIGTERM: the current step (and its validation, if one follows) is
      finished, written and logged, and training stops with ``TrainingStopped`` before the next step starts (the
      recipe's Trainer returns from ``fit`` with one line that says how to resume). A second signal stops at once,
      keeping the last complete file: the command line's process ends by the signal itself, a Python session (a
      notebook's kernel) gets ``StoppedAtOnce``.
    It is never written when training stops on an error (a non-finite loss), so the last good checkpoint stays, nor
    inside a gradient accumulation (``trainer.accumulate_grad_batches``), nor under ``fast_dev_run``.
    Under several processes the time bound and the stop are agreed on the steps that log
    (``trainer.log_every_n_steps``), where the processes meet anyway.

    It is not a ModelCheckpoint, so a user's own ModelCheckpoint (best-k files, ``save_last``) runs beside it.

    Args:
        every_n_seconds: Write ``last.ckpt`` once this many seconds have passed since the last write (checked after
            every step). null: no time bound.
        every_n_train_steps: Also write it every this many optimizer steps. 0: no step bound.
        dirpath: Directory of ``last.ckpt``. null: the run's ``checkpoints/`` folder (Lightning's rule).
    """

    def __init__(self, every_n_seconds: Optional[float] = 60.0, every_n_train_steps: int = 0,
                 dirpath: Optional[str] = None) -> None:
        if every_n_seconds is not None and every_n_seconds <= 0:
            raise LitGPTError(f"periodic_checkpoint.every_n_seconds must be positive (or null), got {every_n_seconds}")
        if every_n_train_steps < 0:
            raise LitGPTError(f"periodic_checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.every_n_seconds, self.every_n_steps, self.dirpath = every_n_seconds, every_n_train_steps, dirpath
        self._last_write = 0.0  # clock() of the last write (or of the start of training)
        self._saved_step: Optional[int] = None  # the step last.ckpt holds, written by this run
        self._signal: Optional[int] = None  # the first SIGINT/SIGTERM received while training
        self._stopping = 0  # the signal that stops the run once last.ckpt holds the step it finished (0: none)
        self._previous_handlers: dict[int, Any] = {}
        # The command line that resumes a stopped run, set by the command line: there a second signal ends the process
        # by the signal itself (exit status 128 + its number). None: a Python session, which goes on.
        self.command: Optional[str] = None

    def directory(self, trainer: L.Trainer) -> Path:
        """The folder of ``last.ckpt`` for this trainer (known before the run starts)."""
        return Path(self.dirpath) if self.dirpath is not None else run_checkpoint_dir(trainer)

    @property
    def last_path(self) -> str:
        return os.path.join(self.dirpath, "last.ckpt")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = trainer.strategy.broadcast(str(self.directory(trainer)))  # rank 0's, on every node
        if stage == "fit":  # until training starts, a signal stops at once: nothing is worth writing yet
            self._install(self._on_startup_signal)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_write, self._signal, self._stopping = clock(), None, 0
        self._install(self._on_signal)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # Here, not where last.ckpt was written: Lightning logs a step's metrics after its batch-end hooks, and
        # trainer.should_stop would add a validation that the run's schedule does not have.
        if self._stopping:
            raise TrainingStopped(self._stopping, trainer.global_step, self.last_path)

    def _install(self, handler: Any) -> None:
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, handler)
            self._previous_handlers.setdefault(signum, previous)

    @staticmethod
    def _on_startup_signal(signum: int, frame: Any) -> None:
        raise StartupInterrupted(signum)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal is None:
            self._signal = signum
            print(f"\n{signal_name(signum)} received: finishing this step and writing {self.last_path} "
                  f"(send it again to stop at once)", file=sys.stderr, flush=True)
            return
        message = f"{signal_name(signum)} again: stopping at once; {self.last_path} keeps the last complete write"
        if self.command is None:  # a Python session (a notebook's kernel) goes on: the exception ends the run
            self._restore_handlers()
            raise StoppedAtOnce(message)
        print(message, file=sys.stderr, flush=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of the signal itself: the shell reports 128 + its number

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _agree(self, trainer: L.Trainer, time_due: bool, batch_idx: Optional[int] = None) -> tuple[int, bool]:
        """(the signal that stops the run, 0 for none; time_due), the same on every process: any process's signal
        stops all, and each reports that signal; rank 0's clock decides the time bound. Several processes compare them
        on logging steps (``batch_idx``), or now (None), where they meet anyway."""
        stop = int(self._signal or 0)
        if trainer.world_size == 1:
            return stop, time_due
        if batch_idx is not None and not logged_step_done(trainer, batch_idx):
            return 0, False
        flags = torch.tensor([float(stop), float(time_due and trainer.is_global_zero)],
                             device=trainer.strategy.root_device)
        flags = trainer.strategy.reduce(flags, reduce_op="max")  # (2,): the largest of every process's flags
        return int(flags[0]), bool(flags[1])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not completes_step(trainer, batch_idx):
            return  # inside a gradient accumulation: not a state a run can resume from
        time_due = self.every_n_seconds is not None and clock() - self._last_write >= self.every_n_seconds
        stop, time_due = self._agree(trainer, time_due, batch_idx)
        if validation_follows(trainer):
            return  # the validation right after this step writes last.ckpt, and stops if asked to
        step_due = every_n_done(trainer, self.every_n_steps)
        if stop or time_due or step_due:
            self._write(trainer)
        self._stopping = stop  # same on every process; another process's signal stops this one too, as itself

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._write(trainer)  # improved or not: the file holds the state after this validation
        self._stopping, _ = self._agree(trainer, False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        self._write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        write = failed_write(exception)
        if write is not None:  # for the one line the CLI prints: which file was kept, and the run's folder
            write.last_checkpoint = os.path.join(self.dirpath or self.directory(trainer), "last.ckpt")
            write.run_folder = os.path.normpath(trainer.log_dir) if trainer.log_dir else None

    def _write(self, trainer: L.Trainer) -> None:
        # Decided the same on every process (never by a local file: nodes need not share a disk), since saving runs
        # collectives that every process must join.
        if self._saved_step == trainer.global_step or trainer.fast_dev_run:
            return  # this step is already in last.ckpt (e.g. training ended right after a validation)
        trainer.save_checkpoint(self.last_path, weights_only=False)  # the full state: weights, optimizer, loops
        self._saved_step, self._last_write = trainer.global_step, clock()


def periodic_checkpoint(trainer: L.Trainer) -> Optional[PeriodicCheckpoint]:
    """The run's periodic_checkpoint callback, if it has one."""
    return next((c for c in trainer.callbacks if isinstance(c, PeriodicCheckpoint)), None)


def last_checkpoint(trainer: L.Trainer) -> Path:
    """The run's ``last.ckpt``: where periodic_checkpoint writes it (or would, by Lightning's rule, were it off)."""
    periodic = periodic_checkpoint(trainer)
    return (periodic.directory(trainer) if periodic is not None else run_checkpoint_dir(trainer)) / "last.ckpt"


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
