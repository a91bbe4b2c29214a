"""The private Lightning APIs the project relies on, where no public one does the job: each test here fails if an
upgrade moves or changes one, so that the upgrade is noticed here and not in a user's run."""

import inspect

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lit_gpt import cli, devices
from lit_gpt.checkpointing import ResumedLogStep


def test_the_spawn_launcher_is_the_class_the_cli_looks_for() -> None:
    """EndSpawnedProcessGroup recognises the processes that ddp_spawn started by their launcher's class."""
    assert devices._MultiProcessingLauncher is not None
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.launcher, devices._MultiProcessingLauncher)


def test_the_logging_step_counter_is_where_resumed_log_step_sets_it() -> None:
    """ResumedLogStep sets fit_loop.epoch_loop._batches_that_stepped, the step Lightning logs at."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 0
    assert "_batches_that_stepped" in inspect.getsource(type(trainer.fit_loop.epoch_loop))
    trainer.fit_loop.epoch_loop._batches_that_stepped = 5  # one step late, as after a resume
    ResumedLogStep().on_train_batch_start(trainer, None, None, 0)
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == trainer.global_step == 0


def test_lightning_cli_still_reads_ckpt_path_hyper_parameters_in_the_hook_the_cli_replaces() -> None:
    """GPTLightningCLI replaces LightningCLI._parse_ckpt_path, which would load a checkpoint's hyper-parameters over
    the command line's; if Lightning renamed it, its own version would run again."""
    assert "_parse_ckpt_path" in inspect.getsource(LightningCLI.__init__)
    assert cli.GPTLightningCLI._parse_ckpt_path is not LightningCLI._parse_ckpt_path


def test_lightning_cli_builds_its_trainer_with_the_method_the_cli_calls() -> None:
    """GPTLightningCLI.instantiate_trainer hands the composed callbacks to LightningCLI._instantiate_trainer(config,
    callbacks), which adds the config-saving callback and builds the Trainer, as LightningCLI's own method does."""
    assert list(inspect.signature(LightningCLI._instantiate_trainer).parameters) == ["self", "config", "callbacks"]
    assert "self._instantiate_trainer(" in inspect.getsource(LightningCLI.instantiate_trainer)
