"""The command line: ``python train.py {fit,validate} --config configs/<recipe>.yaml [--section.key value]``."""

import logging
import os
import shlex
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from lit_gpt.checkpointing import AtomicCheckpointIO, PeriodicCheckpoint, ResumedLogStep, checkpoint_step
from lit_gpt.config import GPTConfig
from lit_gpt.data import CharDataModule
from lit_gpt.devices import (EndSpawnedProcessGroup, FastCudaMatmuls, bf16_supported, refuse_sharding,
                             without_slurm_auto_requeue)
from lit_gpt.errors import CheckpointWriteError, LitGPTError, StartupInterrupted, TrainingStopped
from lit_gpt.files import read_checkpoint
from lit_gpt.guard import NonFiniteGuard
from lit_gpt.module import LitGPT
from lit_gpt.monitor import TrainingMonitor
from lit_gpt.progress import DropLightningTips, RunSummary, StepProgressBar
from lit_gpt.rng import RankRNG
from lit_gpt.throughput import TokenThroughput

for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):  # Lightning's info
    logging.getLogger(_name).addFilter(DropLightningTips())
# Lightning 2.6 calls a torch API that torch 2.13 deprecates, on every fit and validate; not the user's to fix.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
# Lightning 2.6's strategy.all_gather (the dropout streams of every rank, gathered into each checkpoint) calls it.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")


class GPTLightningCLI(LightningCLI):
    """LightningCLI with the vocabulary and block size linked from the data into the model, and our callbacks."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit`` and ``validate`` only: a character model has no separate test split or prediction step (score
        another text with ``validate --data.path``; generate with sample.py)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module reads the text in __init__, so these exist when the model is instantiated.
        parser.link_arguments("data.vocab_size", "model.config.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
        parser.link_arguments("data.block_size", "model.config.block_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": False,  # periodic_checkpoint writes last.ckpt, after every validation too
                "checkpoint.filename": "best-{step}-{val_loss:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                # Resuming in the run directory overwrites last.ckpt instead of writing last-v1.ckpt beside it.
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PeriodicCheckpoint, "periodic_checkpoint")
        parser.add_lightning_class_args(TrainingMonitor, "monitor")
        parser.add_lightning_class_args(TokenThroughput, "throughput")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        # RunSummary prints one line instead of Lightning's table (whose "Total Flops" is 0 for this module).
        parser.set_defaults({"trainer.enable_model_summary": False})

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
        if config.trainer.precision == "bf16-mixed" and not bf16_supported(config.trainer.accelerator):
            rank_zero_warn("bf16-mixed precision is not supported on this device; training in 32-true instead")
            config.trainer.precision = "32-true"

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init.trainer
        plugins = without_slurm_auto_requeue(trainer_config.get("plugins"))
        if plugins is not None:
            kwargs["plugins"] = plugins
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.insert(0, ResumedLogStep())  # first: before any callback that logs at a step's start
        trainer.callbacks.append(NonFiniteGuard())  # before any checkpoint: Lightning runs those last
        trainer.callbacks.append(FastCudaMatmuls())
        trainer.callbacks.append(RankRNG())
        trainer.callbacks.append(EndSpawnedProcessGroup())
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default: make its saves atomic
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks.insert(1, RunSummary())  # before the progress bar draws its first line
        bar = trainer.progress_bar_callback
        if (type(bar), getattr(bar, "refresh_rate", None)) in ((TQDMProgressBar, 1), (RichProgressBar, 100)):
            # Lightning's default bar (tqdm, or rich where installed), as it makes it.
            # Steps of max_steps, redrawn when the logger writes (Lightning's redraws every step).
            trainer.callbacks[trainer.callbacks.index(bar)] = StepProgressBar(refresh_rate=trainer.log_every_n_steps)
        return trainer

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would load ``--ckpt_path``'s hyper-parameters over the command line's here, silently (a
        ``--model.config.n_embd`` that differs is ignored) and with a traceback for a bad file. Instead, the
        ``before_<subcommand>`` hooks check the checkpoint against the config and the data, with one clear line."""

    def _check_checkpoint(self, subcommand: str) -> None:
        """One ``error:`` line, before anything is written, for a checkpoint that cannot be used with this config and
        data: unreadable, not a lit_gpt checkpoint, another model shape, another vocabulary."""
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        if ckpt_path is None or ckpt_path in ("best", "hpc", "registry") or str(ckpt_path).startswith("registry:"):
            return
        path = checkpoint_dir(self.trainer) / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
        if ckpt_path == "last" and not path.is_file():
            return  # nothing to resume yet: Lightning says so and starts from step 0
        hparams = read_checkpoint(path, for_resume=subcommand == "fit")["hyper_parameters"]
        self._require_same_model(str(path), hparams, "or start a new run")
        vocab, data_vocab = list(hparams["vocab"]), list(self.datamodule.vocab)
        if vocab != data_vocab:
            unknown = [c for c in data_vocab if c not in set(vocab)]
            raise LitGPTError(
                f"{path} was trained on another text: its vocabulary has {len(vocab)} characters, the data "
                f"({self.datamodule.path}) has {len(data_vocab)}"
                + (f", {len(unknown)} of them not in the checkpoint's ({', '.join(map(repr, unknown[:10]))})"
                   if unknown else ", in other ids")
                + "; pass the text it was trained on with --data.path"
            )

    def _require_same_model(self, what: str, hparams: dict[str, Any], alternative: str = "") -> None:
        """One error line naming every model setting in which a checkpoint differs from this config."""
        mismatches = config_mismatches(hparams, self.model.hparams.arch, self.model.config)
        if mismatches:
            raise LitGPTError(f"{what} does not fit this config: {'; '.join(mismatches)} (use the recipe and "
                              f"settings the checkpoint was trained with{', ' + alternative if alternative else ''})")

    def before_validate(self) -> None:
        self._check_checkpoint("validate")

    def before_fit(self) -> None:
        """Check --ckpt_path; refuse to start a new run over an earlier run's checkpoints (resume it, or pick another
        directory)."""
        self._check_checkpoint("fit")
        accumulate, interval = self.trainer.accumulate_grad_batches, self.trainer.val_check_interval
        if accumulate > 1 and isinstance(interval, int) and interval % accumulate:
            raise LitGPTError(
                f"--trainer.val_check_interval counts batches, and {interval} is not a multiple of "
                f"--trainer.accumulate_grad_batches {accumulate}: a validation would fall inside an optimizer step, "
                f"where no checkpoint can resume exactly; use {interval * accumulate} (every {interval} steps)"
            )
        init_from = self.model.hparams.init_from
        if init_from is not None:
            self._require_same_model(f"--model.init_from {init_from}", read_checkpoint(init_from)["hyper_parameters"])
        if self.config_init["fit"].get("ckpt_path") is not None:
            return
        last = checkpoint_dir(self.trainer) / "last.ckpt"
        if last.is_file():
            raise LitGPTError(
                f"{last} exists from an earlier run: resume it with --ckpt_path last, or start a new run elsewhere "
                f"(--trainer.logger.init_args.name NAME), or delete {last.parent}"
            )


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where the ModelCheckpoint callback writes: its dirpath, else Lightning's default <log_dir>/checkpoints."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath is not None:
        return Path(callback.dirpath)
    if trainer.loggers:
        return Path(trainer.loggers[0].log_dir) / "checkpoints"
    return Path(trainer.default_root_dir) / "checkpoints"


def config_mismatches(hparams: dict[str, Any], arch: str, config: GPTConfig) -> list[str]:
    """The model settings in which a checkpoint's hyper-parameters differ from ``arch`` and ``config``, each as
    ``"n_embd 32 in the checkpoint, 128 in the config"`` (dropout may differ: it changes no weight)."""
    mismatches = [f"arch {hparams['arch']} in the checkpoint, {arch} in the config"] if hparams["arch"] != arch else []
    for name in ("n_layer", "n_head", "n_embd", "bias", "block_size", "mlp", "residual", "layernorm"):
        theirs, ours = hparams["config"].get(name, True), getattr(config, name)  # True: before the switches existed
        if theirs != ours:
            mismatches.append(f"{name} {theirs} in the checkpoint, {ours} in the config")
    return mismatches


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


def cli_main(args: ArgsType = None) -> Optional[GPTLightningCLI]:
    """Run the CLI. A user error ends with one line on stderr and exit status 2, never a traceback; a run stopped by
    SIGINT or SIGTERM (after writing last.ckpt) prints the command that resumes it and exits 130 or 143."""
    try:
        return GPTLightningCLI(
            LitGPT,
            CharDataModule,
            # A rerun in the same run directory overwrites config.yaml instead of refusing to start.
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": __doc__},
            args=args,
        )
    except CheckpointWriteError as err:
        last = Path(err.path).with_name("last.ckpt")
        step = checkpoint_step(last) if last.is_file() else None
        kept = f"{last} holds step {step}" if step is not None else "no earlier checkpoint of this run was kept"
        print(f"error: {err}; {kept}. Free some space, then resume with: {resume_command(args)}", file=sys.stderr)
        raise SystemExit(2) from None
    except LitGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
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
