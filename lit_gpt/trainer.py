"""The recipe's Trainer: Lightning's, with the checks a run gets before it starts and the report after it ends.

The command line and ``lit_gpt.recipe`` build this Trainer, so ``trainer.fit(model, datamodule)`` in Python is the
command line's run: a checkpoint that cannot be used with the model and data, settings that count epochs, or a new run
over an earlier run's ``last.ckpt`` are one ``LitGPTError`` line before anything is written; ``ckpt_path="last"`` is
this run's ``last.ckpt`` (periodic_checkpoint's, whatever ModelCheckpoints the run has).
"""

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import StochasticWeightAveraging, Timer
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_info

from lit_gpt.checkpointing import last_checkpoint, periodic_checkpoint
from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError, StartupInterrupted, TrainingStopped
from lit_gpt.files import read_checkpoint
from lit_gpt.progress import plain_output, run_report
from lit_gpt.tokenizer import named

SPECIAL_PATHS = ("best", "hpc", "registry")  # Lightning's own names for a checkpoint: Lightning resolves them


class RecipeTrainer(L.Trainer):
    """Lightning's Trainer, with the recipe's checks before a run and its report after (lit_gpt/trainer.py).

    ``fit`` and ``validate`` check the run first (one ``LitGPTError`` line) and show warnings as one line; ``fit`` ends
    with what the run made: the best val_loss and its checkpoint, last.ckpt, and the command that samples. From
    Python, a run stopped by a signal (Ctrl-C, a notebook's interrupt) returns from ``fit`` with one line that says how
    to resume, ``stopped`` holding what stopped it (the command line exits instead).
    """

    stopped: Optional[Exception] = None  # the signal's TrainingStopped or StartupInterrupted, if one stopped the run

    def fit(self, model: L.LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: Optional[L.LightningDataModule] = None, ckpt_path: Optional[Union[str, Path]] = None,
            weights_only: Optional[bool] = None) -> None:
        data = datamodule if datamodule is not None else \
            train_dataloaders if isinstance(train_dataloaders, L.LightningDataModule) else None
        ckpt_path = check_fit(self, model, data, ckpt_path)
        self.stopped = None
        try:
            with plain_output(), own_signal_handlers():
                super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only)
        except (TrainingStopped, StartupInterrupted) as stop:
            periodic = periodic_checkpoint(self)
            if periodic is None or periodic.command is not None:
                raise  # the command line says it, and exits with 128 + the signal's number
            self.stopped = stop  # a Python session (a notebook) gets control back, and one line
            if self.is_global_zero:
                resume = '. Resume with: trainer.fit(model, datamodule, ckpt_path="last")' \
                    if isinstance(stop, TrainingStopped) else ""
                print(f"{stop}{resume}", file=sys.stderr, flush=True)
            return
        if not self.fast_dev_run and self.state.status == TrainerStatus.FINISHED:
            rank_zero_info(run_report(self))

    fit.__doc__ = L.Trainer.fit.__doc__  # the command line's help for fit and its arguments: Lightning's

    def validate(self, model: Optional[L.LightningModule] = None, dataloaders: Any = None,
                 ckpt_path: Optional[Union[str, Path]] = None, verbose: bool = True,
                 datamodule: Optional[L.LightningDataModule] = None, weights_only: Optional[bool] = None) -> Any:
        data = datamodule if datamodule is not None else \
            dataloaders if isinstance(dataloaders, L.LightningDataModule) else None
        if model is not None:
            ckpt_path = check_checkpoint(self, model, data, ckpt_path, for_resume=False)
        with plain_output():
            return super().validate(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    validate.__doc__ = L.Trainer.validate.__doc__


@contextmanager
def own_signal_handlers() -> Iterator[None]:
    """SIGINT's and SIGTERM's handlers as they were before the run, whatever the run set: Lightning puts back at its
    teardown the handlers it found when the run started, periodic_checkpoint's start-up one among them, which would
    leave a notebook's later Ctrl-C to it."""
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread sets handlers
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def check_fit(trainer: L.Trainer, model: L.LightningModule, data: Any, ckpt_path: Any) -> Any:
    """The checks before training (one line each); returns ``ckpt_path`` with "last" as this run's last.ckpt."""
    ckpt_path = check_checkpoint(trainer, model, data, ckpt_path, for_resume=True)
    if not trainer.fast_dev_run:
        refuse_epoch_settings(trainer)
    accumulate, interval = trainer.accumulate_grad_batches, trainer.val_check_interval
    if accumulate > 1 and isinstance(interval, int) and interval % accumulate:
        raise LitGPTError(
            f"--trainer.val_check_interval counts batches, and {interval} is not a multiple of "
            f"--trainer.accumulate_grad_batches {accumulate}: a validation would fall inside an optimizer step, "
            f"where no checkpoint can resume exactly; use {interval * accumulate} (every {interval} steps)"
        )
    init_from = model.hparams.get("init_from")
    if init_from is not None:
        require_same_model(f"--model.init_from {init_from}", read_checkpoint(init_from)["hyper_parameters"], model)
    if ckpt_path is not None or trainer.fast_dev_run:
        return ckpt_path  # fast_dev_run writes nothing
    last = last_checkpoint(trainer)
    if last.is_file():
        raise LitGPTError(
            f"{last} exists from an earlier run: resume it with --ckpt_path last (in Python: ckpt_path=\"last\"), or "
            f"start a new run elsewhere (--trainer.logger.init_args.name NAME), or delete {last.parent}"
        )
    return None


def check_checkpoint(trainer: L.Trainer, model: L.LightningModule, data: Any, ckpt_path: Any,
                     for_resume: bool) -> Any:
    """One ``LitGPTError`` line, before anything is written, for a checkpoint that cannot be used with this model and
    data: unreadable, not a lit_gpt checkpoint, another model shape, another vocabulary. Returns the path to use."""
    if ckpt_path is None or ckpt_path in SPECIAL_PATHS or str(ckpt_path).startswith("registry:"):
        return ckpt_path
    path = last_checkpoint(trainer) if ckpt_path == "last" else Path(ckpt_path)
    if ckpt_path == "last":
        if not path.is_file():
            return ckpt_path  # nothing to resume yet: Lightning says so, and training starts from step 0
        ckpt_path = str(path)
    hparams = read_checkpoint(path, for_resume=for_resume)["hyper_parameters"]
    if data is not None and hasattr(model, "take_data"):
        model.take_data(data)  # a model made without a vocabulary takes the data's now, to be compared
    require_same_model(str(path), hparams, model, "or start a new run")
    if data is None or getattr(data, "vocab", None) is None:
        return ckpt_path
    vocab, data_vocab = list(hparams["vocab"]), list(data.vocab)
    if vocab != data_vocab:
        unknown = [c for c in data_vocab if c not in set(vocab)]
        raise LitGPTError(
            f"{path} was trained on another text: its vocabulary has {len(vocab)} characters, the data "
            f"({data.path}) has {len(data_vocab)}"
            + (f", {len(unknown)} of them not in the checkpoint's ({named(unknown)})" if unknown else ", in other ids")
            + "; pass the text it was trained on with --data.path"
        )
    return ckpt_path


def require_same_model(what: str, hparams: dict[str, Any], model: L.LightningModule, alternative: str = "") -> None:
    """One error line naming every model setting in which a checkpoint differs from this model."""
    mismatches = config_mismatches(hparams, model.hparams.arch, model.config)
    if mismatches:
        raise LitGPTError(f"{what} does not fit this config: {'; '.join(mismatches)} (use the recipe and "
                          f"settings the checkpoint was trained with{', ' + alternative if alternative else ''})")


def refuse_epoch_settings(trainer: L.Trainer) -> None:
    """One line for the settings that count epochs, before anything is written: training here draws from one endless
    stream of random windows, so an epoch never ends."""
    interval = trainer.val_check_interval
    if isinstance(interval, float) and interval != 1.0:
        raise LitGPTError(f"--trainer.val_check_interval {interval} is a fraction of an epoch, and training here is "
                          f"one endless stream of random windows: give a number of steps "
                          f"(--trainer.val_check_interval 250)")
    if trainer.limit_train_batches != 1.0 and trainer.max_epochs != 1:
        raise LitGPTError(f"--trainer.limit_train_batches {trainer.limit_train_batches} ends an epoch that the next "
                          f"one would repeat window for window; set the run's length with --trainer.max_steps (or "
                          f"add --trainer.max_epochs 1)")
    if trainer.max_steps == -1 and not any(isinstance(c, Timer) for c in trainer.callbacks):
        raise LitGPTError("the run has no end: training here is one endless stream of random windows, so epochs "
                          "never end; set --trainer.max_steps (or --trainer.max_time)")
    if any(isinstance(c, StochasticWeightAveraging) for c in trainer.callbacks):
        raise LitGPTError("StochasticWeightAveraging averages the weights at the end of each epoch, and training here "
                          "is one endless epoch; average every step with "
                          "lightning.pytorch.callbacks.EMAWeightAveraging")


def config_mismatches(hparams: dict[str, Any], arch: str, config: GPTConfig) -> list[str]:
    """The model settings in which a checkpoint's hyper-parameters differ from ``arch`` and ``config``, each as
    ``"n_embd 32 in the checkpoint, 128 in the config"`` (dropout may differ: it changes no weight)."""
    mismatches = [f"arch {hparams['arch']} in the checkpoint, {arch} in the config"] if hparams["arch"] != arch else []
    defaults = GPTConfig()  # a setting the checkpoint lacks predates it: the default, which it was trained with
    # Every model setting but the vocabulary (the caller compares it character by character) and dropout; the block
    # size, which the data sets, last.
    names = [f.name for f in fields(GPTConfig) if f.name not in ("vocab_size", "dropout")]
    for name in sorted(names, key=lambda name: name == "block_size"):
        theirs, ours = hparams["config"].get(name, getattr(defaults, name)), getattr(config, name)
        if theirs != ours:
            mismatches.append(f"{name} {theirs} in the checkpoint, {ours} in the config")
    return mismatches


