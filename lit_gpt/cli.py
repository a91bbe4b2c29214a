"""The command line: ``python train.py {fit,validate} --config configs/<recipe>.yaml [--section.key value]``."""

import os
import shlex
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lit_gpt.assembly import CALLBACKS, add_callback_groups, as_list, compose
from lit_gpt.checkpointing import checkpoint_step, periodic_checkpoint
from lit_gpt.data import CharDataModule
from lit_gpt.devices import bf16_note, refuse_sharding, without_slurm_auto_requeue
from lit_gpt.errors import (
    WRITE_FIXES, CheckpointWriteError, LitGPTError, StartupInterrupted, TrainingStopped, failed_write, one_line,
    user_error,
)
from lit_gpt.files import forget
from lit_gpt.module import LitGPT
from lit_gpt.progress import plain_output
from lit_gpt.trainer import RecipeTrainer


class GPTLightningCLI(LightningCLI):
    """LightningCLI with the vocabulary and block size linked from the data into the model, and our callbacks.

    Args:
        args: The command line (default ``sys.argv[1:]``).
        run: Run the subcommand; False only builds the model, data and Trainer.
        trainer_objects: Trainer arguments given as Python objects (``lit_gpt.recipe``'s): ``callbacks`` join the
            user's, before the two of ours that write checkpoints; the others (a logger, a profiler) are the Trainer's.
        exit_on_error: A setting the parser refuses exits with usage (the command line) or raises ``ArgumentError``.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, trainer_objects: Optional[dict[str, Any]] = None,
                 exit_on_error: bool = True) -> None:
        self.given_args, self.trainer_objects = args, dict(trainer_objects or {})
        super().__init__(
            LitGPT,
            CharDataModule,
            trainer_class=RecipeTrainer,
            save_config_kwargs={"overwrite": True},  # a rerun in the same run directory overwrites config.yaml
            seed_everything_default=1337,
            parser_kwargs={"description": __doc__, "exit_on_error": exit_on_error},
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit`` and ``validate`` only: a character model has no separate test split or prediction step (score
        another text with ``validate --data.path``; generate with sample.py)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """``args`` given from Python (a bench, a notebook, a test) are the whole command line: Lightning's warning that
        ``sys.argv`` (the bench's own options, a notebook kernel's ``-f ...json``) is also set is not the user's."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within")
            super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module reads the text in __init__, so these exist when the model is instantiated.
        parser.link_arguments("data.vocab_size", "model.config.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.config.block_size", apply_on="instantiate")
        add_callback_groups(parser)  # every callback we add, a group each (lit_gpt/assembly.py)
        # The bar redraws when the logger writes (a redraw reads the loss off the device: progress.StepProgressBar).
        parser.link_arguments("trainer.log_every_n_steps", "progress_bar.init_args.refresh_rate")
        parser.set_defaults({
            "trainer.devices": 1,  # more with --trainer.devices
            "trainer.check_val_every_n_epoch": None,  # validation counts steps: an epoch never ends here
            "trainer.enable_model_summary": False,  # RunSummary prints one line instead of Lightning's table
            # runs/<name>: a recipe names its run (lecture recipes: lecture/<name>); version "" reuses the folder.
            "trainer.logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": "runs", "name": "lit_gpt", "version": ""}},
            # Checkpoints written beside their final path and renamed into place (crash-safe on any TMPDIR).
            "trainer.plugins": [{"class_path": "lit_gpt.checkpointing.AtomicCheckpointIO"}],
        })

    def before_instantiate_classes(self) -> None:
        config = self.config[self.config.subcommand] if "subcommand" in self.config else self.config
        # The data is tokenized with a checkpoint's vocabulary when a checkpoint is scored or fine-tuned.
        ckpt_path = config.get("ckpt_path")
        if config.data.vocab_from is None:
            if self.config.get("subcommand") == "validate" and ckpt_path is not None \
                    and Path(ckpt_path).is_file():
                config.data.vocab_from = ckpt_path
            elif config.model.init_from is not None:
                config.data.vocab_from = config.model.init_from
        refuse_sharding(config.trainer.strategy)
        precision, note = bf16_note(config.trainer.precision, config.trainer.accelerator)
        if note:
            rank_zero_info(note)
        config.trainer.precision = precision

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The Trainer with our callbacks (those the run keeps) around the user's own (lit_gpt/assembly.py); a Trainer
        setting Lightning refuses is one ``error:`` line."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        objects = dict(self.trainer_objects)
        callbacks = as_list(objects.pop("callbacks", None))
        trainer_config = {**config["trainer"], **kwargs, **objects}
        trainer_config["callbacks"] = as_list(trainer_config.get("callbacks")) + callbacks
        trainer_config["callbacks"], notes = compose({name: config.get(name) for name in CALLBACKS}, trainer_config)
        for note in notes:
            rank_zero_info(f"note: {note}")
        plugins = without_slurm_auto_requeue(trainer_config.get("plugins"))
        if plugins is not None:
            trainer_config["plugins"] = plugins
        try:
            return self._instantiate_trainer(trainer_config, [])  # LightningCLI's: adds its config-saving callback
        except (MisconfigurationException, ValueError) as err:
            raise LitGPTError(one_line(err)) from None

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit``, with Lightning's refusals as one line (LightningCLI calls a method named after the
        subcommand where the CLI has one). A signal's stop reaches ``cli_main``, which says how to resume with this
        command line and exits with 128 + the signal's number."""
        periodic = periodic_checkpoint(self.trainer)
        if periodic is not None:
            periodic.command = resume_command(self.given_args)
        self._refusals_in_one_line(self.trainer.fit, **kwargs)

    def validate(self, **kwargs: Any) -> None:
        """``trainer.validate``, with Lightning's refusals as one line."""
        self._refusals_in_one_line(self.trainer.validate, **kwargs)

    def _refusals_in_one_line(self, run: Callable[..., Any], **kwargs: Any) -> None:
        """A setting Lightning refuses once the run has started (a callback's, a precision's) ends in one line, and
        the run folder it had just made is removed: nothing is left half-written."""
        log_dir = self.trainer.log_dir
        new_dir = None  # the outermost folder of log_dir that this run creates
        for folder in [Path(log_dir), *Path(log_dir).parents] if log_dir is not None else []:
            if folder.exists():
                break
            new_dir = folder
        try:
            run(**kwargs)
        except (MisconfigurationException, ModuleNotFoundError) as err:
            if new_dir is not None and rank_zero_only.rank == 0:
                shutil.rmtree(new_dir, ignore_errors=True)
            raise LitGPTError(one_line(err)) from None

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would load ``--ckpt_path``'s hyper-parameters over the command line's here, silently (a
        ``--model.config.n_embd`` that differs is ignored) and with a traceback for a bad file. Instead, the Trainer
        (lit_gpt/trainer.py) checks the checkpoint against the config and the data, with one clear line."""


def resume_command(args: ArgsType) -> str:
    """The command line that resumes this run: the same one, with ``--ckpt_path last`` instead of any other."""
    argv = list(sys.argv[1:] if args is None else args)
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    script = sys.argv[0] if args is None else "train.py"
    python = shutil.which("python")
    exe = "python" if python and os.path.realpath(python) == os.path.realpath(sys.executable) else sys.executable
    prefix = [exe, script] if script.endswith(".py") else [script]
    return shlex.join([*prefix, *kept, "--ckpt_path", "last"])


def write_failure(message: str, last: Optional[Path], fix: str, args: ArgsType) -> None:
    """One line for a write that failed during a run (``message``): which step ``last`` keeps and how to resume, or
    that nothing was kept; exit status 2."""
    step = checkpoint_step(last) if last is not None and last.is_file() else None
    if step is None:
        print(f"error: {message}; no checkpoint of this run was kept. {fix}, then run the command again",
              file=sys.stderr)
    else:
        print(f"error: {message}; {last} holds step {step}. {fix}, then resume with: {resume_command(args)}",
              file=sys.stderr)
    raise SystemExit(2)


def cli_main(args: ArgsType = None) -> Optional[GPTLightningCLI]:
    """Run the CLI and return it (for tests and scripts). A user error ends with one line on stderr and exit status 2,
    never a traceback; a run stopped by SIGINT or SIGTERM (after writing last.ckpt) prints the command that resumes
    it and exits 130 or 143."""
    try:
        with plain_output():
            return GPTLightningCLI(args)
    except CheckpointWriteError as err:
        write_failure(str(err), Path(err.path).with_name("last.ckpt"), WRITE_FIXES.get(err.errno, "Fix it"), args)
    except (OSError, ValueError) as err:  # a LitGPTError that jsonargparse wrapped (a callback group's), or a write
        # of the run that failed (its config, TensorBoard's events, which Lightning's logger wraps in a ValueError)
        cause = user_error(err)
        write = failed_write(err)
        if cause is None and write is None:
            raise
        if cause is not None:
            print(f"error: {cause}", file=sys.stderr)
            raise SystemExit(2) from None
        what = write.filename or f"to {getattr(write, 'run_folder', None) or 'the run folder'}"
        last = getattr(write, "last_checkpoint", None)
        write_failure(f"could not write {what}: {write.strerror}", Path(last) if last else None,
                      WRITE_FIXES[write.errno], args)
    except KeyboardInterrupt:  # Ctrl-C while reading or tokenizing the text, before the Trainer runs
        print("error: SIGINT before training started; nothing was written", file=sys.stderr)
        raise SystemExit(130) from None
    except StartupInterrupted as stop:  # from the Trainer's start until the first step
        print(f"error: {stop}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except TrainingStopped as stop:
        if rank_zero_only.rank == 0:
            print(f"{stop}. Resume with: {resume_command(args)}", file=sys.stderr, flush=True)
        raise SystemExit(128 + stop.signum) from None
    finally:
        forget()  # a process that goes on (a notebook, a test) keeps no map of the checkpoints the run read


def main() -> None:
    """The ``lit-gpt-train`` console script: exit status 0 after a run (the CLI object is not an exit status)."""
    cli_main()
