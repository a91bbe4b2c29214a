"""What a run prints: one summary line, a warning when a GPU recipe runs on a CPU, a bar of steps of max_steps, and
none of Lightning's noise."""

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from unittest import mock

import pytest
import torch

from helpers import DEBUG, ROOT, fit_args
from lit_gpt.cli import GPTLightningCLI, cli_main
from lit_gpt.config import GPTConfig
from lit_gpt.model import GPT
from lit_gpt.progress import StepProgressBar, cpu_step_seconds

def run_in_terminal(args: list[str]) -> tuple[int, bytes]:
    """``train.py`` with a terminal (a pseudo-terminal) as its stdout and stderr: (exit status, what it wrote)."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 x 160 (a new one is 0 x 0)
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=child, stderr=child)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(parent)
    return proc.wait(timeout=300), out


@pytest.mark.slow
def test_a_run_prints_what_its_user_needs(tmp_path: Path) -> None:
    """A real process in a terminal: the summary line, the bar counting steps of max_steps with a time estimate; no
    litlogger tip, no FutureWarning, no model table with 'Total Flops 0', no 'Epoch 0'."""
    status, raw = run_in_terminal(["fit", "--config", DEBUG, "--trainer.max_steps", "12", "--trainer.log_every_n_steps",
                                   "4", "--trainer.logger.init_args.save_dir", str(tmp_path)])
    out = raw.decode()
    assert status == 0, out
    assert re.search(r"lit_gpt: gpt 2 layers x 2 heads x 32 wide, 0\.0\d M parameters; 1,003,854 training characters, "
                     r"vocabulary 65; 12 steps of 8 x 32 characters on 1 cpu device\(s\)", out)
    assert re.search(r"train: +100%\|[^|]*\| 12/12 \[\d\d:\d\d<00:00", out)  # steps of max_steps, elapsed<remaining
    assert "\r" in out and "step 4/12:" not in out  # a bar that redraws, not lines
    for noise in ("litlogger", "Tip:", "FutureWarning", "LeafSpec", "Total Flops", "Epoch 0", "warning: this recipe"):
        assert noise not in out


@pytest.mark.slow
def test_in_a_log_file_a_run_prints_one_plain_line_per_logged_step_and_per_validation(tmp_path: Path) -> None:
    """Output to a file (nohup, SLURM, | tee): no carriage return, no escape code; a line for every logged step with
    train_loss, the last val_loss, tokens/s and the time left, and one for every validation."""
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.run([sys.executable, "train.py", "fit", "--config", DEBUG, "--trainer.max_steps", "12",
                               "--trainer.log_every_n_steps", "4", "--trainer.val_check_interval", "6",
                               "--trainer.logger.init_args.save_dir", str(tmp_path)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, timeout=300)
    raw = (tmp_path / "log").read_bytes()
    assert proc.returncode == 0, raw.decode()
    assert b"\r" not in raw and b"\x1b[" not in raw
    lines = [line for line in raw.decode().splitlines() if re.match(r"(step|validation at step) \d", line)]
    assert [line.split(":")[0] for line in lines] == ["step 4/12", "validation at step 6", "step 8/12", "step 12/12",
                                                     "validation at step 12"]
    assert re.fullmatch(r"step 4/12: train_loss \d\.\d{4}, [\d,]+ tokens/s, \d\d:\d\d left", lines[0])
    assert re.fullmatch(r"step 8/12: train_loss \d\.\d{4}, val_loss \d\.\d{4}, [\d,]+ tokens/s, \d\d:\d\d left",
                        lines[2])
    assert re.fullmatch(r"validation at step 6: val_loss \d\.\d{4}", lines[1])


def test_with_gradient_accumulation_a_step_is_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """3 batches a step, the logger every 2 steps: a line for steps 2, 4 and 6 each, not one per batch."""
    cli_main(fit_args(None, tmp_path, "--trainer.max_steps", "6", "--trainer.accumulate_grad_batches", "3",
                      "--trainer.log_every_n_steps", "2", "--trainer.enable_progress_bar", "true",
                      "--progress_bar.plain", "true", "--trainer.val_check_interval", "300"))
    steps = re.findall(r"^step (\d+)/6:", capsys.readouterr().out, flags=re.M)
    assert steps == ["2", "4", "6"]


def test_a_run_bounded_by_max_time_says_so_in_its_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cli_main(fit_args(None, tmp_path, "--trainer.max_steps", "-1", "--trainer.max_time", "00:00:00:02",
                      "--trainer.val_check_interval", "1000"))
    assert "steps for up to 00:02 (max_time) of 8 x 32 characters" in caplog.text and "-1 steps" not in caplog.text


@pytest.mark.parametrize("extra, refresh_rate", [([], 7), (["--trainer.enable_progress_bar", "false"], None)],
                         ids=["default", "off"])
def test_the_bar_is_ours_and_redraws_when_the_logger_writes(extra: list[str], refresh_rate, tmp_path: Path) -> None:
    """Lightning's default bar (tqdm, or rich where installed) redraws every step; ours every log_every_n_steps."""
    args = ["--config", DEBUG, "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.log_every_n_steps", "7",
            *extra]
    for rich in (False, True):
        with mock.patch("lightning.pytorch.trainer.connectors.callback_connector._RICH_AVAILABLE", rich):
            bar = GPTLightningCLI(args, run=False).trainer.progress_bar_callback
        assert (bar.refresh_rate if bar is not None else None) == refresh_rate
        assert bar is None or type(bar) is StepProgressBar


def test_a_gpu_sized_recipe_on_a_cpu_says_how_long_and_what_to_use(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    with mock.patch("lit_gpt.progress.cpu_step_seconds", return_value=20.0):
        cli_main(fit_args(None, tmp_path / "slow", "--trainer.max_steps", "2"))
    assert "lit_gpt: gpt" in caplog.text and "warning: this recipe" not in caplog.text  # 40 s: fine
    caplog.clear()
    with mock.patch("lit_gpt.progress.cpu_step_seconds", return_value=20.0):
        cli_main(fit_args(None, tmp_path / "long", "--trainer.max_steps", "5000", "--trainer.limit_train_batches", "2",
                          "--trainer.max_epochs", "1"))
    assert re.search(r"warning: this recipe is sized for a GPU: on this CPU a step takes about 20\.0 s, so 5000 "
                     r"steps take about 28 h\. For a CPU use configs/shakespeare_char_cpu\.yaml", caplog.text)


def test_the_cpu_step_estimate_touches_neither_the_model_nor_the_rng() -> None:
    model = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert cpu_step_seconds(model, batch_size=64, block_size=32, vocab_size=65) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class NotebookStream(io.StringIO):
    """Standard output as a Jupyter kernel's: what ``in_notebook`` recognises (ipykernel's stream)."""


NotebookStream.__module__ = "ipykernel.iostream"


def test_in_a_notebook_the_step_line_is_rewritten_in_place_and_validations_stay(tmp_path: Path) -> None:
    """A notebook's cell: each logged step rewrites one line (a carriage return, no escape code, no newline), each
    validation leaves its own line, and the last step's line is ended when training ends."""
    out = NotebookStream()
    with mock.patch.object(sys, "stdout", out):
        cli_main(fit_args(None, tmp_path, "--trainer.max_steps", "12", "--trainer.log_every_n_steps", "4",
                          "--trainer.val_check_interval", "6", "--trainer.enable_progress_bar", "true"))
    text = out.getvalue()
    assert "\x1b[" not in text
    shown = [part for part in re.split(r"[\r\n]", text) if re.match(r"(step|validation at step) \d", part)]
    assert [part.split(":")[0] for part in shown] == ["step 4/12", "validation at step 6", "step 8/12", "step 12/12",
                                                     "validation at step 12"]
    assert re.search(r"\rstep 4/12: [^\n\r]*\rvalidation at step 6: val_loss \d\.\d{4}\n\rstep 8/12: [^\n\r]*"
                     r"\rstep 12/12: [^\n\r]*\rvalidation at step 12: val_loss \d\.\d{4}\n", text), repr(text)


def test_a_resumed_run_counts_its_steps_and_rate_from_where_it_resumed(tmp_path: Path) -> None:
    """A run stopped mid-stream (a signal, a crash: every resume here) restarts inside its epoch, where Lightning
    calls no epoch-start hook: the bar still starts at the resumed step of max_steps, and the rate and time left count
    from there (they counted from step 0 and the clock's zero: "10 tokens/s, 1:19:08 left")."""
    from helpers import SignalAfterStep
    from lit_gpt import recipe

    settings = {"max_steps": 8, "logger": {"init_args": {"save_dir": str(tmp_path)}}, "enable_progress_bar": True}
    trainer, model, dm = recipe("debug", trainer={**settings, "callbacks": [SignalAfterStep(4)]})
    trainer.fit(model, dm)
    assert trainer.stopped.step == 4
    for plain in (False, True):
        (tmp_path / "copy").mkdir(exist_ok=True)
        trainer, model, dm = recipe("debug", trainer={**settings, "logger": {"init_args": {
            "save_dir": str(tmp_path / "copy"), "name": f"plain_{plain}"}}}, progress_bar={"plain": plain})
        trainer.fit(model, dm, ckpt_path=tmp_path / "debug" / "checkpoints" / "last.ckpt")
        bar = trainer.progress_bar_callback
        assert bar._started[1] == 4 and bar._started[0] > 0
        if not plain:
            assert (bar.train_progress_bar.initial, bar.train_progress_bar.total) == (4, 8)


def test_validate_prints_its_score_without_a_step(debug_run: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """``validate`` scores a checkpoint: its line has no step (the Trainer's step there is 0, not the checkpoint's)."""
    cli_main(fit_args(None, tmp_path, "--ckpt_path", str(debug_run["last"]), "--trainer.enable_progress_bar", "true",
                      "--progress_bar.plain", "true", subcommand="validate"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("validation")]
    assert len(lines) == 1 and re.fullmatch(r"validation: val_loss \d\.\d{4}", lines[0]), lines
