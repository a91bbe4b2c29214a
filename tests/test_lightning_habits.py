"""Everyday Lightning habits on the tiny recipe, one run each: every one works as Lightning's documentation says, or is
refused in one ``error:`` line with nothing written."""

import csv
import importlib
import signal
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.cli import SaveConfigCallback

from helpers import DEBUG, ROOT, assert_one_line_error, events, fit_args
from lit_gpt import cli
from lit_gpt.checkpointing import PeriodicCheckpoint, checkpoint_step
from lit_gpt.cli import cli_main
from lit_gpt.monitor import TrainingMonitor
from lit_gpt.throughput import TokenThroughput

pytestmark = pytest.mark.slow  # about 30 runs of a few seconds each

def fit(tmp_path: Path, *extra: str, subcommand: str = "fit") -> cli.GPTLightningCLI:
    """The debug recipe for 6 steps, validating every 2 (on 2 batches), logging under tmp_path/runs."""
    return cli_main(fit_args(None, tmp_path / "runs", "--trainer.max_steps", "6", "--trainer.val_check_interval", "2",
                             "--trainer.limit_val_batches", "2", *extra, subcommand=subcommand))


def checkpoints(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "debug" / "checkpoints"


def step_of(path: Path) -> int:
    return checkpoint_step(path)


def refused(tmp_path: Path, capsys: pytest.CaptureFixture, pattern: str, *extra: str) -> None:
    """One error line matching ``pattern``, exit 2, and no run folder."""
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, *extra)
    assert_one_line_error(capsys, exit_info, pattern)
    assert not (tmp_path / "runs").exists()


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


# Debugging habits ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, steps", [("true", 1), ("3", 3)])
def test_fast_dev_run_writes_nothing(tmp_path: Path, value: str, steps: int) -> None:
    trainer = fit(tmp_path, "--trainer.fast_dev_run", value).trainer
    assert trainer.global_step == steps
    assert not (tmp_path / "runs").exists()  # no checkpoint, no config.yaml, no TensorBoard events


def test_fast_dev_run_beside_an_earlier_run(tmp_path: Path) -> None:
    """A finished run's folder does not stop a fast_dev_run, and the run's files are left as they were."""
    fit(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    fit(tmp_path, "--trainer.fast_dev_run", "true")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before


def test_profiler_prints_its_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fit(tmp_path, "--trainer.profiler", "simple")
    assert "FIT Profiler Report" in caplog.text and "run_training_batch" in caplog.text


def test_model_summary_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit(tmp_path, "--trainer.enable_model_summary", "true")
    assert "Trainable params" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--trainer.detect_anomaly", "--trainer.deterministic"])
def test_debugging_flags(tmp_path: Path, flag: str) -> None:
    trainer = fit(tmp_path, flag, "true").trainer
    assert trainer.global_step == 6 and step_of(checkpoints(tmp_path) / "last.ckpt") == 6


# Checkpoints ---------------------------------------------------------------------------------------------------------

def test_own_model_checkpoint_top_k_beside_ours(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A user's top-2 by val_loss replaces the recipe's best-1 (the same job; Lightning allows one of a kind), and
    last.ckpt is still written."""
    fit(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.monitor", "val_loss", "--trainer.callbacks.save_top_k", "2",
        "--trainer.callbacks.dirpath", str(tmp_path / "top"), "--trainer.callbacks.filename", "top-{step}")
    assert len(list((tmp_path / "top").glob("top-*.ckpt"))) == 2  # of 3 validations
    assert step_of(checkpoints(tmp_path) / "last.ckpt") == 6
    assert not list(checkpoints(tmp_path).glob("best-*.ckpt"))
    assert "your ModelCheckpoint replaces the recipe's best-val_loss one" in caplog.text


def test_own_model_checkpoint_every_n_steps(tmp_path: Path) -> None:
    fit(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps", "2", "--trainer.callbacks.save_top_k", "-1",
        "--trainer.callbacks.dirpath", str(tmp_path / "every"), "--trainer.callbacks.filename", "{step}")
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == ["step=2.ckpt", "step=4.ckpt", "step=6.ckpt"]


def test_own_model_checkpoint_with_save_last(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ModelCheckpoint(save_last=True), no monitor: the state key our periodic last.ckpt once had; now no collision.
    The report names its checkpoint as one, not as the "best None"."""
    fit(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last", "true", "--trainer.callbacks.dirpath", str(tmp_path / "theirs"))
    assert (tmp_path / "theirs" / "last.ckpt").is_file() and step_of(checkpoints(tmp_path) / "last.ckpt") == 6
    assert f"checkpoint (step 6): {tmp_path / 'theirs'}/epoch=0-step=6.ckpt" in caplog.text
    assert "best None" not in caplog.text


def test_checkpointing_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trainer = fit(tmp_path, "--trainer.enable_checkpointing", "false").trainer
    assert trainer.global_step == 6 and not checkpoints(tmp_path).exists()
    assert "writes no checkpoint, so it cannot be resumed" in caplog.text


def test_our_checkpoint_group_off_still_resumes_from_last(tmp_path: Path) -> None:
    fit(tmp_path, "--checkpoint", "null")
    assert not list(checkpoints(tmp_path).glob("best-*"))
    resumed = fit(tmp_path, "--checkpoint", "null", "--trainer.max_steps", "8", "--ckpt_path", "last").trainer
    assert resumed.global_step == 8 and step_of(checkpoints(tmp_path) / "last.ckpt") == 8


def test_max_time_ends_with_a_fresh_last_checkpoint(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.max_steps", "-1", "--trainer.max_time", "00:00:00:03").trainer
    assert 0 < trainer.global_step and step_of(checkpoints(tmp_path) / "last.ckpt") == trainer.global_step


def test_end_of_run_says_what_it_made(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fit(tmp_path)
    best = next(checkpoints(tmp_path).glob("best-*.ckpt"))
    assert "lit_gpt: done at step 6" in caplog.text
    assert f"best val_loss {best.stem.split('-')[-1]} at step {step_of(best)}: {best}" in caplog.text
    assert f"last.ckpt (step 6): {checkpoints(tmp_path) / 'last.ckpt'}" in caplog.text
    assert f"sample: python sample.py --checkpoint {best}" in caplog.text


# Loggers ----------------------------------------------------------------------------------------------------------

def test_no_logger_trains_and_checkpoints(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "root")).trainer
    assert not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)  # Lightning refuses it without one
    assert step_of(tmp_path / "root" / "checkpoints" / "last.ckpt") == 6
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_csv_logger(tmp_path: Path) -> None:
    fit(tmp_path, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(tmp_path / "csv"), "--trainer.log_every_n_steps", "2")
    [metrics] = (tmp_path / "csv").rglob("metrics.csv")
    run = metrics.parent  # <save_dir>/<name>/<version>, by Lightning's rule (the recipe's version is "")
    rows = csv_rows(metrics)
    assert [int(r["step"]) for r in rows if r.get("train_loss")] == [1, 3, 5]  # every 2nd step, 0-based
    assert [int(r["step"]) for r in rows if r.get("val_loss")] == [1, 3, 5]
    assert [int(r["step"]) for r in rows if r.get("lr/decay")] == [1, 3, 5]  # the learning-rate monitor's
    assert step_of(run / "checkpoints" / "last.ckpt") == 6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("after_step", [3, 4], ids=["mid-interval", "before-a-validation"])
def test_a_stopped_run_logs_every_step_it_ran(tmp_path: Path, signum: int, after_step: int) -> None:
    """Ctrl-C or SIGTERM: the step it interrupts is finished, written to last.ckpt and logged, as is the validation that
    follows it; nothing of the next step is."""
    init = f'{{"step": {after_step}, "signum": {int(signum)}}}'
    stop = f'{{"class_path": "helpers.SignalAfterStep", "init_args": {init}}}'
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir",
            str(tmp_path / "csv"), "--trainer.log_every_n_steps", "1", f"--trainer.callbacks+={stop}")
    assert exit_info.value.code == 128 + signum
    [metrics] = (tmp_path / "csv").rglob("metrics.csv")
    rows = csv_rows(metrics)
    assert step_of(metrics.parent / "checkpoints" / "last.ckpt") == after_step
    assert [int(r["step"]) for r in rows if r.get("train_loss")] == list(range(after_step))  # 0-based steps
    assert [int(r["step"]) for r in rows if r.get("val_loss")] == [s - 1 for s in (2, 4) if s <= after_step]


def test_own_learning_rate_monitor_beside_ours(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor").trainer
    assert sum(isinstance(c, LearningRateMonitor) for c in trainer.callbacks) == 2


# Callbacks ---------------------------------------------------------------------------------------------------------

def test_early_stopping(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping",
                  "--trainer.callbacks.monitor", "val_loss", "--trainer.callbacks.stopping_threshold", "100").trainer
    assert trainer.global_step == 2 and step_of(checkpoints(tmp_path) / "last.ckpt") == 2  # the first validation


def test_ema_weight_averaging_validates_the_averaged_weights(tmp_path: Path) -> None:
    plain = fit(tmp_path / "plain").trainer.callback_metrics["val_loss"].item()
    ema = fit(tmp_path / "ema", "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
              "--trainer.callbacks.decay", "0.5").trainer.callback_metrics["val_loss"].item()
    assert ema != plain


def test_switching_our_callbacks_off(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--monitor", "null", "--throughput", "null", "--lr_monitor", "null",
                  "--periodic_checkpoint", "null").trainer
    kinds = (TrainingMonitor, TokenThroughput, LearningRateMonitor, PeriodicCheckpoint)
    assert not [c for c in trainer.callbacks if isinstance(c, kinds)]
    assert trainer.global_step == 6 and not (checkpoints(tmp_path) / "last.ckpt").exists()


def test_replacing_one_of_ours(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.enable_progress_bar", "true",
                  "--progress_bar.class_path", "lightning.pytorch.callbacks.TQDMProgressBar").trainer
    assert type(trainer.progress_bar_callback) is TQDMProgressBar


def test_own_progress_bar_replaces_ours(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.enable_progress_bar", "true",
                  "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar").trainer
    assert type(trainer.progress_bar_callback) is TQDMProgressBar


def test_device_stats_monitor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It needs psutil on a CPU: where psutil is missing, Lightning's refusal is one line and nothing is written."""
    args = ["--trainer.callbacks+=lightning.pytorch.callbacks.DeviceStatsMonitor"]
    try:
        import psutil  # noqa: F401
    except ImportError:
        refused(tmp_path, capsys, r"DeviceStatsMonitor.*psutil", *args)
    else:
        fit(tmp_path, *args)
        tags = events(tmp_path / "runs" / "debug").Tags()["scalars"]
        assert any(tag.startswith("DeviceStatsMonitor") for tag in tags), tags  # its statistics are logged


# Trainer flags -------------------------------------------------------------------------------------------------------

def test_bf16_mixed_on_a_cpu_is_honoured_and_clips(tmp_path: Path) -> None:
    """CPU autocast, with the fused AdamW kept and its gradients clipped (Lightning refuses to clip a fused optimizer
    under any mixed precision; bf16 has no gradient scaler, so the module clips them itself)."""
    trainer = fit(tmp_path, "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "0.01",
                  "--trainer.callbacks+=helpers.GradNorms").trainer
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 6
    assert trainer.optimizers[0].defaults["fused"]
    norms = next(c for c in trainer.callbacks if type(c).__name__ == "GradNorms").norms
    assert len(norms) == 6 and max(norms) <= 0.01 * 1.001


def test_16_mixed_on_a_cpu_is_bf16_as_in_lightning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Lightning runs bf16 autocast on a CPU for 16-mixed, and says so in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as a user's Python shows them (the tests' settings ignore Lightning's)
        trainer = fit(tmp_path, "--trainer.precision", "16-mixed").trainer
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 6
    lines = [line for line in capsys.readouterr().err.splitlines() if "not supported on CPU" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "bf16-mixed" in lines[0]


def test_gradient_accumulation(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.accumulate_grad_batches", "2", "--trainer.val_check_interval", "4").trainer
    assert trainer.global_step == 6 and step_of(checkpoints(tmp_path) / "last.ckpt") == 6


def test_one_epoch_of_a_few_batches(tmp_path: Path) -> None:
    trainer = fit(tmp_path, "--trainer.limit_train_batches", "3", "--trainer.max_epochs", "1").trainer
    assert trainer.global_step == 3


def test_validate_a_run(tmp_path: Path) -> None:
    """Validating last.ckpt (step 6) scores what the run's own validation at step 6 scored: validation is
    deterministic."""
    ran = fit(tmp_path).trainer.callback_metrics["val_loss"].item()
    cli_obj = fit(tmp_path, "--ckpt_path", str(checkpoints(tmp_path) / "last.ckpt"), subcommand="validate")
    assert cli_obj.trainer.callback_metrics["val_loss"].item() == pytest.approx(ran, rel=1e-6)


# Refused, in one line, with nothing written ------------------------------------------------------------------------

@pytest.mark.parametrize("extra, pattern", [
    (["--trainer.val_check_interval", "0.5"], r"val_check_interval"),
    (["--trainer.val_check_interval", "0.5", "--trainer.check_val_every_n_epoch", "1"],
     r"val_check_interval 0\.5 is a fraction of an epoch.*--trainer\.val_check_interval 250"),
    (["--trainer.max_steps", "-1"], r"no end.*--trainer\.max_steps"),
    (["--trainer.limit_train_batches", "3"], r"limit_train_batches 3 .*repeat.*--trainer\.max_steps"),
    (["--trainer.callbacks+=lightning.pytorch.callbacks.StochasticWeightAveraging",
      "--trainer.callbacks.swa_lrs", "0.01"], r"StochasticWeightAveraging .*EMAWeightAveraging"),
    (["--trainer.barebones", "true"], r"barebones=True.*logger"),
    (["--trainer.strategy", "fsdp"], r"fsdp is not supported.*ddp"),
], ids=["fraction", "fraction-per-epoch", "endless", "epochs-of-a-few", "swa", "barebones", "fsdp"])
def test_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], pattern: str) -> None:
    refused(tmp_path, capsys, pattern, *extra)


# The command itself --------------------------------------------------------------------------------------------------

def test_console_script_exits_0_after_a_run(tmp_path: Path) -> None:
    """``lit-gpt-train`` is ``lit_gpt.cli:main``, which returns nothing: the exit status is 0 (a returned CLI object
    would have been printed and exit 1)."""
    assert "lit-gpt-train = lit_gpt.cli:main" in (ROOT / "setup.cfg").read_text()
    argv = ["lit-gpt-train", *fit_args(None, tmp_path, "--trainer.max_steps", "2")]
    with mock.patch.object(sys, "argv", argv):
        assert cli.main() is None


def test_warnings_are_one_line(tmp_path: Path) -> None:
    """Lightning's warning for --ckpt_path last with nothing to resume, as a user sees it: one ``warning:`` line,
    without Python's file, line number and source line."""
    import subprocess

    result = subprocess.run([sys.executable, str(ROOT / "train.py"),
                             *fit_args(None, tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "2")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "no last checkpoint" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: "), result.stderr
    assert "warnings.warn" not in result.stderr and "UserWarning" not in result.stderr


def test_print_config_shows_every_callback_and_plugin_that_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", DEBUG, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    trainer = fit(tmp_path, "--trainer.enable_progress_bar", "true").trainer
    shown = {import_class(printed[name]["class_path"]) for name in cli.CALLBACKS}
    ran = {type(c) for c in trainer.callbacks}
    assert ran - shown == {SaveConfigCallback}  # LightningCLI's own, not a setting
    assert len(ran) == len(trainer.callbacks)  # one of each
    assert printed["trainer"]["plugins"] == [{"class_path": "lit_gpt.checkpointing.AtomicCheckpointIO"}]
    assert type(trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
