"""Lightning from Python: the package's face, and a LightningModule that takes its vocabulary and window from the
data when the Trainer starts."""

import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from helpers import GradNorms, SignalAfterStep, fit_args
from lit_gpt import CharDataModule, GPTConfig, LitGPT, LitGPTError, TextGenerator, recipe
from lit_gpt.checkpointing import checkpoint_step
from lit_gpt.errors import StoppedAtOnce, TrainingStopped


def plain_trainer(tmp_path: Path, steps: int = 3) -> L.Trainer:
    return L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
                     accelerator="cpu")


def test_the_five_lines_train_and_their_checkpoint_samples(tmp_path: Path) -> None:
    """A model made without a vocabulary takes the data's vocabulary and window at fit; its checkpoint carries them,
    so TextGenerator (sample.py) samples from it."""
    dm = CharDataModule(block_size=32, batch_size=8)
    model = LitGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32))
    assert model.model is None  # not built until the data is known
    trainer = plain_trainer(tmp_path)
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert (model.config.vocab_size, model.config.block_size) == (dm.vocab_size, 32)
    assert model.hparams.vocab == dm.vocab and model.hparams.config["block_size"] == 32
    trainer.save_checkpoint(tmp_path / "five.ckpt")
    text = TextGenerator.from_checkpoint(tmp_path / "five.ckpt", "cpu").generate("ROMEO:", 20, seed=1)[0]
    assert text.startswith("ROMEO:") and len(text) == 26


def test_a_given_vocabulary_that_is_not_the_datas_is_one_error(tmp_path: Path) -> None:
    dm = CharDataModule(block_size=32, batch_size=8)
    model = LitGPT(GPTConfig(vocab_size=3, block_size=32, n_layer=1, n_head=1, n_embd=8), vocab=list("abc"))
    with pytest.raises(LitGPTError, match=r"the model's vocabulary \(3 characters\) is not the data's \(65\)"):
        plain_trainer(tmp_path).fit(model, dm)
    short = LitGPT(GPTConfig(vocab_size=dm.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8), vocab=dm.vocab)
    with pytest.raises(LitGPTError, match=r"the data's windows \(32 characters\) are longer than the model's "
                                          r"block_size 16"):
        plain_trainer(tmp_path).fit(short, dm)


def test_a_model_without_a_vocabulary_needs_a_datamodule(tmp_path: Path) -> None:
    model = LitGPT(GPTConfig(n_layer=1, n_head=1, n_embd=8))
    loader = torch.utils.data.DataLoader([(torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long))])
    with pytest.raises(LitGPTError, match=r"takes the vocabulary from its datamodule"):
        plain_trainer(tmp_path).fit(model, train_dataloaders=loader)


# The recipe's run from Python ------------------------------------------------------------------------------------

FIXTURE = Path(__file__).parent / "data" / "d46f91f_debug_step6.ckpt"
# The settings FIXTURE was trained with (configs/debug.yaml and these, 6 steps, by the code of commit d46f91f).
FIXTURE_SETTINGS = {"model": {"config": {"n_layer": 1, "n_embd": 16}}, "data": {"block_size": 16},
                    "trainer": {"val_check_interval": 3}, "periodic_checkpoint": {"every_n_train_steps": 3}}


def python_run(runs: Path, steps: int, name: str = "debug", **settings):
    """The debug recipe built from Python, its run under ``runs``, no bar (as ``fit_args``)."""
    trainer = {"max_steps": steps, "enable_progress_bar": False,
               "logger": {"init_args": {"save_dir": runs, "name": name}}, **settings.pop("trainer", {})}
    return recipe("debug", trainer=trainer, **settings)


def cli_run(runs: Path, steps: int, *extra: str):
    from lit_gpt.cli import cli_main

    return cli_main(fit_args(None, runs, "--trainer.max_steps", str(steps), *extra))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_recipe_from_python_is_the_command_lines_run(tmp_path: Path) -> None:
    """Built by the command line's code: the same Trainer settings, callbacks in the same order, model and data; the
    same seed, so the same weights after the same steps."""
    from lit_gpt.cli import GPTLightningCLI
    from lit_gpt.trainer import RecipeTrainer

    trainer, model, dm = python_run(tmp_path / "py", 6)
    cli = GPTLightningCLI(fit_args(None, tmp_path / "cli", "--trainer.max_steps", "6")[1:], run=False)
    assert isinstance(trainer, RecipeTrainer) and type(cli.trainer) is type(trainer)
    assert [type(c) for c in trainer.callbacks] == [type(c) for c in cli.trainer.callbacks]
    assert dict(model.hparams) == dict(cli.model.hparams)
    assert (dm.block_size, dm.batch_size, dm.vocab) == (cli.datamodule.block_size, cli.datamodule.batch_size,
                                                        cli.datamodule.vocab)
    for name in ("max_steps", "val_check_interval", "gradient_clip_val", "log_every_n_steps", "precision"):
        assert getattr(trainer, name) == getattr(cli.trainer, name), name
    trainer, model, dm = python_run(tmp_path / "py", 6)  # built and run as the command line does: one after the other
    trainer.fit(model, dm)
    cli_run(tmp_path / "cli", 6)
    assert trainer.global_step == 6
    assert_same_weights(tmp_path / "py" / "debug" / "checkpoints" / "last.ckpt",
                        tmp_path / "cli" / "debug" / "checkpoints" / "last.ckpt")
    assert (tmp_path / "py" / "debug" / "config.yaml").is_file()  # the run's recipe, for train.py fit --config


def test_a_run_resumes_across_python_and_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Stopped by Ctrl-C in Python (fit returns, with one line), resumed by the command line; and a command-line run
    extended from Python: both end with the weights of an uninterrupted run."""
    cli_run(tmp_path / "straight", 8)
    straight = tmp_path / "straight" / "debug" / "checkpoints" / "last.ckpt"

    trainer, model, dm = python_run(tmp_path / "a", 8, trainer={"callbacks": [SignalAfterStep(3)]})
    capsys.readouterr()
    trainer.fit(model, dm)  # returns: no SystemExit, no exception
    assert isinstance(trainer.stopped, TrainingStopped) and trainer.stopped.step == 3
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stopped by")]
    assert line == (f"stopped by SIGINT after step 3; {tmp_path}/a/debug/checkpoints/last.ckpt holds that step. "
                    f'Resume with: trainer.fit(model, datamodule, ckpt_path="last")')
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back
    cli_run(tmp_path / "a", 8, "--ckpt_path", "last")
    assert_same_weights(tmp_path / "a" / "debug" / "checkpoints" / "last.ckpt", straight)

    cli_run(tmp_path / "b", 4)
    trainer, model, dm = python_run(tmp_path / "b", 8)
    trainer.fit(model, dm, ckpt_path="last")
    assert trainer.global_step == 8 and trainer.stopped is None
    assert_same_weights(tmp_path / "b" / "debug" / "checkpoints" / "last.ckpt", straight)


def test_a_recipe_checks_its_run_as_the_command_line_does(tmp_path: Path) -> None:
    trainer, model, dm = python_run(tmp_path, 2)
    trainer.fit(model, dm)
    trainer, model, dm = python_run(tmp_path, 4)
    with pytest.raises(LitGPTError, match=r'last\.ckpt exists from an earlier run: resume it with --ckpt_path last '
                                          r'\(in Python: ckpt_path="last"\)'):
        trainer.fit(model, dm)
    trainer, model, dm = python_run(tmp_path, 4, name="wider", model={"config": {"n_embd": 64}})
    with pytest.raises(LitGPTError, match=r"does not fit this config: n_embd 32 in the checkpoint, 64 in the config"):
        trainer.fit(model, dm, ckpt_path=tmp_path / "debug" / "checkpoints" / "last.ckpt")
    assert not (tmp_path / "wider").exists()  # refused before anything was written
    with pytest.raises(LitGPTError, match=r"the run has no end"):
        python_run(tmp_path, -1, name="endless")[0].fit(model, dm)


def test_a_recipe_names_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(LitGPTError, match=r"^no recipe 'debg': give the path of a YAML file or one of: .*\bdebug\b"):
        recipe("debg")
    with pytest.raises(LitGPTError, match=r"unrecognized arguments: --trainr\.max_steps=3"):
        recipe("debug", trainr={"max_steps": 3})
    with pytest.raises(LitGPTError, match=r'"model\.learning_rate": Expected a <class .float.>'):
        recipe("debug", model={"learning_rate": "fast"})
    with pytest.raises(LitGPTError, match=r"^need 0 < min_lr <= learning_rate"):
        recipe("debug", model={"min_lr": 1.0})
    with pytest.raises(LitGPTError, match=r"^model: give numbers, strings, lists and dictionaries"):
        recipe("debug", model={"config": GPTConfig()})


def test_a_recipes_own_callbacks_and_logger_compose_with_ours(tmp_path: Path) -> None:
    """Objects under trainer=: the user's callback runs after ours and before the two that write checkpoints (as on
    the command line); a logger object replaces the recipe's TensorBoard one; a group set to None is off."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from lit_gpt.checkpointing import PeriodicCheckpoint
    from lit_gpt.monitor import TrainingMonitor

    mine = GradNorms()
    trainer, model, dm = recipe("debug", trainer={"max_steps": 3, "callbacks": [mine],
                                                  "logger": CSVLogger(tmp_path, name="csv")}, monitor=None)
    kinds = [type(c) for c in trainer.callbacks]
    assert kinds.index(GradNorms) < kinds.index(PeriodicCheckpoint) < kinds.index(ModelCheckpoint)
    assert TrainingMonitor not in kinds
    assert isinstance(trainer.logger, CSVLogger)
    trainer.fit(model, dm)
    assert len(mine.norms) == 3
    assert (tmp_path / "csv" / "version_0" / "checkpoints" / "last.ckpt").is_file()  # Lightning's rule, the user's logger
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()


def test_a_second_interrupt_in_python_stops_at_once_and_the_session_goes_on(tmp_path: Path) -> None:
    """The command line's process dies of a second Ctrl-C; a notebook's kernel must not: StoppedAtOnce is raised, the
    handlers are put back, and last.ckpt keeps its last complete write."""
    trainer, model, dm = python_run(tmp_path, 8, trainer={"callbacks": [SignalAfterStep(5), SignalAfterStep(5)]},
                                    periodic_checkpoint={"every_n_train_steps": 2})
    with pytest.raises(StoppedAtOnce, match=r"SIGINT again: stopping at once; .*last\.ckpt keeps the last complete"):
        trainer.fit(model, dm)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert checkpoint_step(tmp_path / "debug" / "checkpoints" / "last.ckpt") == 4


# A checkpoint written by the code before the Python API ----------------------------------------------------------

def test_a_checkpoint_of_the_earlier_code_loads_samples_scores_and_resumes(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """FIXTURE was written by commit d46f91f (configs/debug.yaml with FIXTURE_SETTINGS, step 6). It samples, the
    command line scores it, and the command line and Python resume it to the same weights."""
    import shutil

    from lit_gpt.cli import cli_main
    from lit_gpt.recipes import as_args
    from lit_gpt.sample_cli import main as sample_main

    text = TextGenerator.from_checkpoint(FIXTURE, "cpu").generate("ROMEO:", 30, seed=3)[0]
    assert text.startswith("ROMEO:") and len(text) == 36
    sample_main(["--checkpoint", str(FIXTURE), "--prompt", "ROMEO:", "--max_new_tokens", "30", "--seed", "3"])
    assert text in capsys.readouterr().out

    settings = [arg for section, value in FIXTURE_SETTINGS.items() for arg in as_args(section, value)]
    cli = cli_main(fit_args(None, tmp_path / "score", *settings, "--ckpt_path", str(FIXTURE), subcommand="validate"))
    assert 3.0 < cli.trainer.callback_metrics["val_loss"].item() < 4.5

    for name in ("cli", "py"):
        folder = tmp_path / name / "debug" / "checkpoints"
        folder.mkdir(parents=True)
        shutil.copy(FIXTURE, folder / "last.ckpt")
    cli_main(fit_args(None, tmp_path / "cli", *settings, "--trainer.max_steps", "9", "--ckpt_path", "last"))
    trainer, model, dm = python_run(tmp_path / "py", 9, **FIXTURE_SETTINGS)
    trainer.fit(model, dm, ckpt_path="last")
    assert trainer.global_step == 9
    assert_same_weights(tmp_path / "cli" / "debug" / "checkpoints" / "last.ckpt",
                        tmp_path / "py" / "debug" / "checkpoints" / "last.ckpt")
    resumed = weights(tmp_path / "py" / "debug" / "checkpoints" / "last.ckpt")
    assert resumed.keys() == weights(FIXTURE).keys()
    assert not all(torch.equal(resumed[k], weights(FIXTURE)[k]) for k in resumed)  # three more steps were trained
