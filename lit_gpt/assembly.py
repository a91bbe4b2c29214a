"""How a run is assembled: every callback the command line adds to Lightning's Trainer, in one table.

Each callback is a config group of its own, which ``--print_config`` shows with its settings:

    --monitor null                            switch one off
    --monitor.sample_length 100               tune it
    --monitor.class_path my_pkg.MyMonitor     replace it

A user's own callbacks (``--trainer.callbacks+=...``) run after ours, and before our two that write checkpoints (as
Lightning runs every ModelCheckpoint after the other callbacks: what they write is complete for the step). Where a
Trainer flag or a user's callback takes over a job, ours steps aside as Lightning's own default would, and says so in
one line; nothing is inserted later.
The checkpoint IO is the default of ``trainer.plugins`` (shown by ``--print_config`` too).
"""

from typing import Any, Optional

from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser

from lit_gpt.checkpointing import PeriodicCheckpoint, ResumedLogStep
from lit_gpt.devices import EndSpawnedProcessGroup, FastCudaMatmuls
from lit_gpt.guard import NonFiniteGuard
from lit_gpt.monitor import TrainingMonitor
from lit_gpt.progress import RunSummary, StepProgressBar
from lit_gpt.rng import RankRNG
from lit_gpt.throughput import TokenThroughput

# name: (class, its settings where they differ from the class's defaults). In the order Lightning calls them, the
# user's callbacks before the last two (WRITE_LAST). What depends on what:
# - log_step first: it sets the step Lightning logs at before any callback logs at a step's start (lr_monitor).
# - summary before progress_bar: its line comes before the bar's first.
# - rank_rng: exact resume needs it (every rank's dropout stream in every checkpoint); off, a resume is inexact.
# - nonfinite_guard: checked when any checkpoint is written, so no checkpoint holds weights a non-finite step touched.
# - periodic_checkpoint writes last.ckpt (resume, signals); checkpoint keeps the best val_loss. Both need validation
#   to run for val_loss, and periodic_checkpoint's signal handling is what makes Ctrl-C and SIGTERM resumable. Both
#   write after every other callback's hooks of a step, a user's EMA included, so that a resume is exact.
CALLBACKS: dict[str, tuple[type[Callback], dict[str, Any]]] = {
    "log_step": (ResumedLogStep, {}),
    "summary": (RunSummary, {}),
    "progress_bar": (StepProgressBar, {}),
    "rank_rng": (RankRNG, {}),
    "nonfinite_guard": (NonFiniteGuard, {}),
    "throughput": (TokenThroughput, {}),
    "monitor": (TrainingMonitor, {}),
    "lr_monitor": (LearningRateMonitor, {"logging_interval": "step"}),
    "cuda_matmul": (FastCudaMatmuls, {}),
    "spawn_cleanup": (EndSpawnedProcessGroup, {}),
    "periodic_checkpoint": (PeriodicCheckpoint, {}),
    "checkpoint": (ModelCheckpoint, {
        "monitor": "val_loss", "mode": "min", "save_top_k": 1,
        "filename": "best-{step}-{val_loss:.4f}", "auto_insert_metric_name": False,
        # Resuming in the run directory overwrites the best file's name instead of writing a -v1 copy beside it.
        "enable_version_counter": False,
    }),
}
WRITE_LAST = ("periodic_checkpoint", "checkpoint")


def add_callback_groups(parser: LightningArgumentParser) -> None:
    """One config group per callback of ours, each ``null``-able and replaceable (jsonargparse's subclass mode)."""
    for name, (cls, settings) in CALLBACKS.items():
        parser.add_lightning_class_args(Callback, name, subclass_mode=True, required=False)  # any callback replaces it
        default = {"class_path": f"{cls.__module__}.{cls.__qualname__}"}
        parser.set_defaults({name: {**default, "init_args": settings} if settings else default})


def as_list(callbacks: Any) -> list[Callback]:
    return [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]


def compose(ours: dict[str, Optional[Callback]], trainer: dict[str, Any]) -> tuple[list[Callback], list[str]]:
    """The run's callbacks: ours that it keeps, in the table's order, with the user's before WRITE_LAST; and one line
    for each of ours that steps aside.

    Args:
        ours: The instantiated groups (None where switched off with ``--NAME null``).
        trainer: The Trainer's arguments: its flags and the user's own ``callbacks``.
    """
    user = as_list(trainer.get("callbacks"))
    barebones = bool(trainer.get("barebones"))
    checkpointing = trainer.get("enable_checkpointing") is not False and not barebones
    logger = trainer.get("logger")
    has_logger = logger is not False and logger != [] and not barebones
    aside = {
        "progress_bar": (trainer.get("enable_progress_bar") is False or barebones
                         or any(isinstance(c, ProgressBar) for c in user), None),
        "lr_monitor": (not has_logger, None),
        "checkpoint": (not checkpointing or any(isinstance(c, ModelCheckpoint) for c in user),
                       "your ModelCheckpoint replaces the recipe's best-val_loss one (the checkpoint group)"
                       if checkpointing else None),
        "periodic_checkpoint": (not checkpointing, "checkpointing is off: this run writes no checkpoint, so it "
                                "cannot be resumed" if not trainer.get("fast_dev_run") else None),
    }
    first, last, notes = [], [], []
    for name, callback in ours.items():
        steps_aside, note = aside.get(name, (False, None))
        if callback is None or steps_aside:
            notes += [note] if callback is not None and note else []
            continue
        (last if name in WRITE_LAST else first).append(callback)
    return [*first, *user, *last], notes
