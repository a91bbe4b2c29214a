"""Exact resume, crash safety and the non-finite loss guard (issue: training that survives)."""

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import (
    ROOT, assert_one_line_error, callback, events, fit_args, read_losses, start_process as start, wait_until,
)
from lit_gpt.checkpointing import AtomicCheckpointIO, PeriodicCheckpoint, checkpoint_step
from lit_gpt.errors import CheckpointWriteError, TrainingStopped
from lit_gpt.cli import cli_main

def args(corpus: Path, runs: Path, record: Path, *extra: str) -> list[str]:
    """30 steps of the debug recipe, last.ckpt every 4, every loss recorded in ``record``."""
    return fit_args(corpus, runs, "--trainer.max_steps", "30", "--periodic_checkpoint.every_n_train_steps", "4",
                    callback("helpers.LossRecorder", path=str(record)), *extra)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_exact(corpus_path: Path, tmp_path: Path, optimizer: str) -> None:
    """30 steps straight == 13 steps, resume to 24, resume to 30: every train_loss and val_loss bit for bit, with
    AdamW and with Muon + AdamW (both optimizers' states travel in the checkpoint).

    Dropout is on (debug recipe: 0.1), both stops fall between validations (every 10 steps), and each leg is
    started with a smaller max_steps than the whole run, so the schedule must not depend on max_steps.
    """
    straight, legs = tmp_path / "straight.txt", tmp_path / "legs.txt"
    opt = ["--model.optimizer", optimizer]
    cli_main(args(corpus_path, tmp_path / "a", straight, *opt))
    cli_main(args(corpus_path, tmp_path / "b", legs, *opt, "--trainer.max_steps", "13"))
    cli_main(args(corpus_path, tmp_path / "b", legs, *opt, "--trainer.max_steps", "24", "--ckpt_path", "last"))
    cli_main(args(corpus_path, tmp_path / "b", legs, *opt, "--trainer.max_steps", "30", "--ckpt_path", "last"))
    a, b = read_losses(straight), read_losses(legs)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k[0] == "train"]) == 30 and len([k for k in a if k[0] == "val"]) == 3
    assert a == b


def keep_copies(runs: Path) -> str:
    """A callback argument: copies of every new last.ckpt of the run in ``runs`` go to ``runs/copies``."""
    init = {"checkpoint_dir": str(runs / "debug" / "checkpoints"), "copies": str(runs / "copies")}
    return "--trainer.callbacks+=" + json.dumps({"class_path": "helpers.KeepLastCopies", "init_args": init})


def test_resume_from_a_periodic_checkpoint(corpus_path: Path, tmp_path: Path) -> None:
    """A checkpoint written mid-run (every 4 steps) resumes exactly too, not only the one written at the end."""
    straight = tmp_path / "straight.txt"
    cli_main(args(corpus_path, tmp_path / "a", straight, keep_copies(tmp_path / "a")))
    ckpt = tmp_path / "a" / "copies" / "step=16.ckpt"
    resumed = tmp_path / "resumed.txt"
    cli_main(args(corpus_path, tmp_path / "b", resumed, "--ckpt_path", str(ckpt)))
    a, b = read_losses(straight), read_losses(resumed)
    assert min(step for _, step in b) == 17
    assert all(a[k] == v for k, v in b.items()) and len(b) == 14 + 2  # steps 17..30, val at 20 and 30


def test_a_validation_step_writes_last_once_after_the_validation(corpus_path: Path, tmp_path: Path) -> None:
    """Periodic saves every 4 steps, validations every 10 (debug recipe): step 20's last.ckpt is written once, after
    its validation; a resume from it repeats nothing."""
    record = tmp_path / "straight.txt"
    cli_main(args(corpus_path, tmp_path / "a", record, keep_copies(tmp_path / "a"), "--trainer.max_steps", "21"))
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "a" / "copies").glob("step=*.ckpt"))
    assert saved == [4, 8, 10, 12, 16, 20]  # the validations at 10 and 20 write it; no second write at 20
    after_validation = torch.load(tmp_path / "a" / "copies" / "step=20.ckpt", weights_only=False)
    assert after_validation["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["total"]["completed"] > 0
    resumed = tmp_path / "resumed.txt"
    cli_main(args(corpus_path, tmp_path / "b", resumed, "--ckpt_path", str(tmp_path / "a" / "copies" / "step=20.ckpt")))
    assert sorted(read_losses(resumed)) == [("train", s) for s in range(21, 31)] + [("val", 30)]  # no val at 20


def test_last_is_written_at_every_validation_even_when_val_loss_does_not_improve(corpus_path: Path,
                                                                                  tmp_path: Path) -> None:
    """Validations every 10 steps that never improve val_loss: last.ckpt still holds the state after each one."""
    worse = "--trainer.callbacks+=helpers.WorseningValLoss"
    cli_main(args(corpus_path, tmp_path, tmp_path / "r.txt", keep_copies(tmp_path), worse,
                  "--periodic_checkpoint.every_n_train_steps", "0", "--trainer.max_steps", "25"))
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "copies").glob("step=*.ckpt"))
    assert saved == [10, 20]
    assert len(list((tmp_path / "debug" / "checkpoints").glob("best-*.ckpt"))) == 1  # only the first was best


def test_last_is_written_by_time(corpus_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """every_n_seconds 1.0 with a clock that moves 0.3 s a step (no step bound): a write every 4th step, counted from
    the last write (the validation at step 10 included)."""
    import helpers
    import lit_gpt.checkpointing

    monkeypatch.setattr(lit_gpt.checkpointing, "clock", lambda: helpers.FAKE_TIME["now"])
    clock = '--trainer.callbacks+={"class_path": "helpers.FakeClock", "init_args": {"seconds_per_step": 0.3}}'
    cli_main(args(corpus_path, tmp_path, tmp_path / "r.txt", keep_copies(tmp_path), clock,
                  "--periodic_checkpoint.every_n_train_steps", "0", "--periodic_checkpoint.every_n_seconds", "1.0",
                  "--trainer.max_steps", "19"))
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "copies").glob("step=*.ckpt"))
    assert saved == [4, 8, 10, 14, 18]


def test_atomic_save_never_leaves_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(Path(src)), real_replace(src, dst)))
    io.save_checkpoint({"step": 2}, target)
    assert seen[0].parent == target.parent  # the temporary file is on the checkpoint's filesystem

    def dies_half_way(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(CheckpointWriteError, match="could not write the checkpoint .*last.ckpt: disk full"):
        io.save_checkpoint({"step": 3}, target)
    assert torch.load(target, weights_only=True) == {"step": 2}  # the previous file is intact
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


@pytest.mark.parametrize("log_every", ["1", "10"])
def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    corpus_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture, log_every: str
) -> None:
    """The loss is checked without a host sync and read every log_every_n_steps steps and before every save: with
    10, training runs on past step 15 but still names step 15 and never saves the damaged weights (step 20)."""
    poison = '--trainer.callbacks+={"class_path": "helpers.PoisonWeights", "init_args": {"at_step": 15}}'
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args(corpus_path, tmp_path, tmp_path / "r.txt", poison, "--periodic_checkpoint.every_n_train_steps",
                      "5", "--trainer.log_every_n_steps", log_every))
    assert_one_line_error(capsys, exit_info, r"train_loss is not finite at step 15")
    ckpt = torch.load(tmp_path / "debug" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 15
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def fault_rng() -> random.Random:
    """The random fault moments' generator, its seed printed (pytest shows it with a failure): FAULT_SEED=N replays."""
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(1, 2**31))
    print(f"fault moments drawn with FAULT_SEED={seed}")
    return random.Random(seed)


def uninterrupted(corpus: Path, tmp_path: Path, base: list[str]) -> Path:
    """The losses of a run of ``base`` that nothing stops (in tmp_path/a): what a stopped and resumed run must equal."""
    straight = tmp_path / "straight.txt"
    cli_main(args(corpus, tmp_path / "a", straight, *base))
    return straight


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(corpus_path: Path, tmp_path: Path) -> None:
    """Fault test: SIGKILL a real training process 3 times at random moments, resume each time with
    --ckpt_path last, and compare every logged loss with an uninterrupted run."""
    steps, kills = 120, 3
    base = ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", "25", "--trainer.limit_val_batches", "2",
            "--periodic_checkpoint.every_n_train_steps", "10"]
    straight, record, rng = uninterrupted(corpus_path, tmp_path, base), tmp_path / "killed.txt", fault_rng()
    record.touch()
    killed_at = []
    for attempt in range(kills + 1):
        resume = ["--ckpt_path", "last"] if attempt else []
        cmd = [sys.executable, str(ROOT / "train.py"), *args(corpus_path, tmp_path / "b", record, *base, *resume)]
        log = tmp_path / f"attempt{attempt}.log"
        proc = start(cmd, log)
        if attempt < kills:
            # A random number of further steps, then a random extra delay.
            wait_for_steps(record, proc, len(read_losses(record)) + rng.randint(3, 30))
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
            killed_at.append(max(step for _, step in read_losses(record)))
        else:
            proc.wait(timeout=300)
            assert proc.returncode == 0, log.read_text()[-2000:]
    a, b = read_losses(straight), read_losses(record)
    print(f"killed after steps {killed_at}; {len(a)} losses compared")
    assert len(set(killed_at)) == kills
    assert sorted(b) == sorted(a) and a == b


def tensorboard_points(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file of a run directory, in the order they were written."""
    run = events(run_dir)
    return {tag: [(e.step, e.value) for e in run.Scalars(tag)] for tag in tags}


LOGGED = ("train_loss", "val_loss", "val_bpc", "lr/decay", "grad_norm", "hp_metric")


@pytest.fixture(scope="module")
def straight_run(corpus_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[int, float]]]:
    runs = tmp_path_factory.mktemp("straight")
    cli_main(args(corpus_path, runs, runs / "losses.txt"))
    return tensorboard_points(runs / "debug", LOGGED)


@pytest.mark.parametrize("stop", [13, 20, 21], ids=["before", "at", "after"])
def test_resumed_run_logs_every_point_at_the_straight_runs_step(straight_run: dict, corpus_path: Path,
                                                                 tmp_path: Path, stop: int) -> None:
    """TensorBoard's (step, value) pairs of 30 straight steps equal those of `stop` steps + a resume to 30, for a
    stop before, exactly at (the run ended at max_steps = a validation step) and after a validation (every 10)."""
    cli_main(args(corpus_path, tmp_path, tmp_path / "losses.txt", "--trainer.max_steps", str(stop)))
    cli_main(args(corpus_path, tmp_path, tmp_path / "losses.txt", "--ckpt_path", "last"))
    resumed = tensorboard_points(tmp_path / "debug", LOGGED)
    assert [step for step, _ in straight_run["val_loss"]] == [9, 19, 29]
    assert len(straight_run["train_loss"]) == 30
    for tag in LOGGED:
        # TensorBoardLogger writes a placeholder hp_metric of -1 at step 0 each time a run starts; skip those.
        assert [p for p in resumed[tag] if p != (0, -1.0)] == [p for p in straight_run[tag] if p != (0, -1.0)], tag


STOPPED = re.compile(r"^stopped by (SIGINT|SIGTERM) after step (\d+); (.+) holds that step\. Resume with: (.+)$")


def wait_for_steps(record: Path, proc: subprocess.Popen, target: int) -> None:
    """Until ``target`` losses are recorded, or the process has ended (120 s at most)."""
    wait_until(lambda: len(read_losses(record)) >= target or proc.poll() is not None, timeout=120)


@pytest.mark.slow
def test_sigint_and_sigterm_at_random_moments_save_and_resume_exactly(corpus_path: Path, tmp_path: Path) -> None:
    """A real training process gets SIGINT, SIGTERM, SIGINT at random moments. Each time it finishes the step it is
    in, writes last.ckpt for it, prints one line with the command that resumes, and exits 130 or 143; that command,
    run as printed, continues; in the end every loss equals an uninterrupted run's."""
    base = ["--trainer.max_steps", "120", "--trainer.val_check_interval", "25", "--trainer.limit_val_batches", "2",
            "--periodic_checkpoint.every_n_train_steps", "0"]
    straight, record, rng = uninterrupted(corpus_path, tmp_path, base), tmp_path / "stopped.txt", fault_rng()
    record.touch()
    cmd = [sys.executable, "train.py", *args(corpus_path, tmp_path / "b", record, *base)]
    stopped_at = []
    for attempt, signum in enumerate([signal.SIGINT, signal.SIGTERM, signal.SIGINT, None]):
        log = tmp_path / f"attempt{attempt}.log"
        proc = start(cmd, log)
        if signum is None:
            assert proc.wait(timeout=300) == 0, log.read_text()[-2000:]
            break
        wait_for_steps(record, proc, len(read_losses(record)) + rng.randint(3, 30))
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 128 + signum, log.read_text()[-2000:]
        lines = [line for line in log.read_text().splitlines() if line.startswith("stopped by")]
        assert len(lines) == 1 and "Traceback" not in log.read_text(), log.read_text()[-2000:]
        name, step, path, resume = STOPPED.match(lines[0]).groups()
        assert name == signum.name
        assert checkpoint_step(path) == int(step)
        assert max(s for _, s in read_losses(record)) == int(step)  # it finished that step, and went no further
        stopped_at.append(int(step))
        cmd = shlex.split(resume)
        assert cmd[1] == "train.py" and cmd[-2:] == ["--ckpt_path", "last"]
        cmd[0] = sys.executable
    a, b = read_losses(straight), read_losses(record)
    print(f"stopped after steps {stopped_at}; {len(a)} losses compared")
    assert sorted(b) == sorted(a) and a == b


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(corpus_path: Path, tmp_path: Path) -> None:
    """The first SIGINT asks for a clean stop after the current step; a second one before that stops the process at
    once, by SIGINT itself (exit status 130 in a shell), keeping the last complete last.ckpt."""
    record = tmp_path / "r.txt"
    record.touch()
    held = tmp_path / "held"
    hold = callback("helpers.HeldStep", step=8, announce=str(held), release=str(tmp_path / "never"))
    proc = start([sys.executable, "train.py", *args(corpus_path, tmp_path, record, hold)], tmp_path / "log")
    assert wait_until(held.exists)  # steps 1..8 done; step 9 is held before it runs, for as long as the test needs
    proc.send_signal(signal.SIGINT)
    assert wait_until(lambda: "SIGINT received" in (tmp_path / "log").read_text())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == -signal.SIGINT
    err = (tmp_path / "log").read_text()
    assert "SIGINT again: stopping at once" in err and "Traceback" not in err
    assert max(s for _, s in read_losses(record)) == 8
    assert checkpoint_step(tmp_path / "debug" / "checkpoints" / "last.ckpt") == 8


@pytest.mark.slow
def test_sigterm_stops_every_ddp_process_at_the_same_step(corpus_path: Path, tmp_path: Path) -> None:
    """Two CPU processes (ddp): SIGTERM to the main one only. They agree on a logging step (every 5 here), both stop
    after it, last.ckpt holds it, the exit status is 143, and no process is left behind."""
    record = tmp_path / "r.txt"
    record.touch()
    cmd = [sys.executable, "train.py", *args(corpus_path, tmp_path, record, "--trainer.max_steps", "3000",
                                             "--trainer.devices", "2", "--trainer.strategy", "ddp",
                                             "--trainer.log_every_n_steps", "5")]
    proc = start(cmd, tmp_path / "log")
    wait_for_steps(record, proc, 12)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "log").read_text()[-2000:]
    lines = [line for line in (tmp_path / "log").read_text().splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1, (tmp_path / "log").read_text()[-2000:]
    step = int(STOPPED.match(lines[0]).group(2))
    assert step % 5 == 0 and step == max(s for _, s in read_losses(record))
    assert checkpoint_step(tmp_path / "debug" / "checkpoints" / "last.ckpt") == step

    def left_behind() -> list[str]:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if str(record).encode() in cmdline.read_bytes():
                    left.append(cmdline.parent.name)
            except OSError:  # the process ended while we looked
                pass
        return left

    assert wait_until(lambda: not left_behind(), timeout=10), f"processes left behind: {left_behind()}"


def test_every_process_reports_the_signal_that_stopped_the_run() -> None:
    """Two processes: the other one got Ctrl-C (SIGINT), this one nothing; at the next logged step both stop, and this
    one reports SIGINT too (it reported SIGTERM)."""
    other = torch.tensor([float(signal.SIGINT), 0.0])
    strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=lambda t, reduce_op: torch.maximum(t, other))
    trainer = SimpleNamespace(world_size=2, is_global_zero=False, strategy=strategy, accumulate_grad_batches=1,
                              log_every_n_steps=1, global_step=3, fast_dev_run=False, enable_validation=False,
                              check_val_every_n_epoch=None)
    callback = PeriodicCheckpoint(every_n_seconds=None, dirpath="unused")
    callback._write = lambda trainer: None  # the write itself is not what this is about
    callback.on_train_batch_end(trainer, None, None, None, batch_idx=2)
    with pytest.raises(TrainingStopped) as stopped:
        callback.on_train_batch_start(trainer, None, None, batch_idx=3)
    assert stopped.value.signum == signal.SIGINT
