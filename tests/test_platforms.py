"""Where users run it: the macOS (MPS) and Windows branches, checked on Linux with those platforms' conditions forced
(``on_windows()`` patched: patching ``os.name`` itself breaks pathlib on Linux);
faults of the machine (a full disk, Ctrl-C during start-up) that end in one line."""

import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch
from torchmetrics.aggregation import MeanMetric

from helpers import assert_one_line_error, fit_args
from lit_gpt import checkpointing, files
from lit_gpt.checkpointing import AtomicCheckpointIO, checkpoint_step
from lit_gpt.cli import cli_main
from lit_gpt.devices import bf16_supported
from lit_gpt.errors import CheckpointWriteError, LitGPTError
from lit_gpt.generate import resolve_device
from lit_gpt.module import compiles_by_default, metric_dtype

MPS = torch.device("mps")


# macOS on Apple silicon ------------------------------------------------------------------------------------------

def test_on_mps_the_validation_sums_are_float32_and_compile_and_bf16_are_off() -> None:
    assert metric_dtype(MPS) == torch.float32  # MPS has no float64
    assert metric_dtype(torch.device("cpu")) == metric_dtype(torch.device("cuda")) == torch.float64
    assert not compiles_by_default(MPS) and not compiles_by_default(torch.device("cpu"))
    assert compiles_by_default(torch.device("cuda"))
    with mock.patch("torch.cuda.is_available", return_value=False), \
            mock.patch("torch.backends.mps.is_available", return_value=True):
        assert not bf16_supported("auto") and not bf16_supported("mps")  # bf16-mixed falls back to 32-true


def test_float32_validation_sums_stay_exact_enough() -> None:
    """The val split of tiny Shakespeare in batches of 64 windows of 64 (111,540 losses): the float32 mean MPS gets
    equals the float64 one to 1e-6 relative (the val_loss printed has 4 decimals)."""
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(111_540, generator=g, dtype=torch.float64) * 4  # (N,) per-character losses in [0, 4)
    means = {}
    for dtype in (torch.float32, torch.float64):
        metric = MeanMetric(nan_strategy="disable")
        metric.set_dtype(dtype)
        for batch in losses.split(64 * 64):
            metric.update(batch.to(dtype))
        means[dtype] = metric.compute().item()
    assert means[torch.float32] == pytest.approx(means[torch.float64], rel=1e-6)
    assert means[torch.float64] == pytest.approx(losses.mean().item(), rel=1e-12)


def test_sampling_device_auto_picks_mps_after_cuda() -> None:
    with mock.patch("torch.cuda.is_available", return_value=False), \
            mock.patch("torch.backends.mps.is_available", return_value=True):
        assert resolve_device("auto") == MPS and resolve_device("mps") == MPS
    with mock.patch("torch.cuda.is_available", return_value=False), \
            mock.patch("torch.backends.mps.is_available", return_value=False):
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(LitGPTError, match="no usable MPS device"):
            resolve_device("mps")


# Windows ---------------------------------------------------------------------------------------------------------

def test_on_windows_a_checkpoint_is_saved_without_opening_its_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses os.open on a folder: the folder fsync is skipped there, and the save still replaces the file."""
    real_open = os.open

    def windows_open(path, flags, *args):
        if Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", windows_open)
    target = tmp_path / "last.ckpt"
    with pytest.raises(PermissionError):  # the Linux branch opens the folder
        AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    monkeypatch.setattr(files, "on_windows", lambda: True)
    monkeypatch.setattr(checkpointing, "on_windows", lambda: True)
    AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 2}


def test_on_windows_checkpoints_are_read_without_a_memory_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              corpus_path: Path) -> None:
    """A mapped file cannot be replaced on Windows, and a resumed run rewrites the last.ckpt it read."""
    runs = tmp_path / "runs"
    cli_main(fit_args(corpus_path, runs, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"))
    last = runs / "debug" / "checkpoints" / "last.ckpt"
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (seen.append(k.get("mmap")), real_load(*a, **k))[1])
    for windows in (False, True):
        monkeypatch.setattr(files, "on_windows", lambda: windows)
        for read in (files.read_checkpoint, checkpointing.checkpoint_step):
            files.forget()  # the last read is kept for the next caller: read it again
            read(last)
    assert seen == [True, True, False, False]


# Faults ----------------------------------------------------------------------------------------------------------

def test_a_full_disk_during_a_checkpoint_is_one_line_that_says_how_to_resume(
        corpus_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """last.ckpt at steps 4 and 8 (every_n_train_steps 4); the disk is full at the third write: one line that names
    the error, the step last.ckpt holds and the resume command; last.ckpt intact; no temporary file left."""
    real_save, writes = torch.save, []

    def fills_up(obj, f, *args, **kwargs):
        writes.append(1)
        if len(writes) == 3:
            f.write(b"PK\x03\x04 part of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", fills_up)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(corpus_path, runs, "--trainer.max_steps", "20", "--trainer.val_check_interval", "100",
                          "--periodic_checkpoint.every_n_train_steps", "4"))
    folder = runs / "debug" / "checkpoints"
    assert_one_line_error(capsys, exit_info, rf"could not write the checkpoint {folder}/last.ckpt: No space left on "
                                             rf"device; {folder}/last.ckpt holds step 8\. Free some space, then resume "
                                             r"with: .*--ckpt_path last$")
    assert checkpoint_step(folder / "last.ckpt") == 8
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


class FillsUp:
    """A file on a disk that is full after ``room`` bytes: the write that passes it raises ENOSPC."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name: str):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_full_disk_inside_torch_save_is_the_os_error_not_torchs_runtime_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's zip writer turns a failed write into RuntimeError("unexpected pos ..."): the checkpoint writer answers
    with the disk's own error; the earlier checkpoint stays and no temporary file is left."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    with FillsUp(open(tmp_path / "other", "wb"), 5000) as full, pytest.raises(RuntimeError, match="unexpected pos"):
        torch.save({"w": torch.randn(10_000)}, full)  # what torch itself says of it
    monkeypatch.setattr(files, "open", lambda p, mode: FillsUp(open(p, mode), 5000), raising=False)
    with pytest.raises(CheckpointWriteError, match=r"could not write the checkpoint .*last.ckpt: No space left"):
        AtomicCheckpointIO().save_checkpoint({"w": torch.randn(10_000)}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "other"]


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """``folder``, a tmpfs of ``size`` while inside (mounting one needs root: skipped, and said so, elsewhere; the
    simulated full disks still run)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (the simulated full disks still run)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # files a run left open go with it


def test_a_checkpoint_on_a_real_full_disk_is_one_error(tmp_path: Path) -> None:
    """A tmpfs of 64 KiB (mounting one needs root: skipped, and said so, elsewhere): the first checkpoint fits, the
    second does not; the error names the disk's reason; the first stays whole, no temporary file is left."""
    with small_disk(tmp_path / "disk", "64k") as disk:
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000)}, disk / "last.ckpt")  # about 5 KB
        with pytest.raises(CheckpointWriteError, match="No space left on device"):
            AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000)}, disk / "last.ckpt")  # about 400 KB
        assert torch.equal(torch.load(disk / "last.ckpt", weights_only=True)["w"], torch.zeros(1000))
        assert [p.name for p in disk.iterdir()] == ["last.ckpt"]


def no_space(filename=None) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", filename)


@pytest.mark.parametrize("where", ["config", "events", "token_cache"])
def test_every_write_of_a_run_that_fails_on_a_full_disk_is_one_line(
        where: str, corpus_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """The run's config.yaml (before training), its TensorBoard events (at step 10 of 20, last.ckpt written every 4
    steps) and the token cache (a new text): one line that says what could not be written, what was kept and what to
    do; exit 2."""
    runs = tmp_path / "runs"
    if where == "config":
        from lightning.pytorch.cli import SaveConfigCallback

        def full(self, *args, **kwargs):
            raise no_space(str(runs / "debug" / "config.yaml"))

        monkeypatch.setattr(SaveConfigCallback, "save_config", full)
        expected = rf"could not write {runs}/debug/config.yaml: No space left on device; no checkpoint of this run " \
                   r"was kept\. Free some space, then run the command again$"
    elif where == "events":
        from torch.utils.tensorboard.writer import FileWriter

        real = FileWriter.add_event

        def full(self, event, step=None, walltime=None):
            if step is not None and step >= 10 and any(v.tag == "train_loss" for v in event.summary.value):
                raise no_space()
            return real(self, event, step, walltime)

        monkeypatch.setattr(FileWriter, "add_event", full)
        folder = runs / "debug" / "checkpoints"  # last.ckpt: every 4 steps, and the events fail past step 10
        expected = rf"could not write to {runs}/debug: No space left on device; {folder}/last.ckpt holds step 12\. " \
                   r"Free some space, then resume with: .*--ckpt_path last$"
    else:
        def full(*args, **kwargs):
            raise no_space()

        monkeypatch.setattr("lit_gpt.token_cache.encode_chunks", full)
        (tmp_path / "new.txt").write_text("a text no cache has seen yet\n" * 200)
        corpus_path = tmp_path / "new.txt"
        expected = r"could not write the token cache .*\.ids: No space left on device; nothing was kept and " \
                   r"training has not started\. Free some space \(or set --data\.cache_dir to a folder on another " \
                   r"disk\), then run the command again$"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(corpus_path, runs, "--trainer.max_steps", "20", "--trainer.val_check_interval", "100",
                          "--periodic_checkpoint.every_n_train_steps", "4", "--trainer.log_every_n_steps", "2"))
    assert_one_line_error(capsys, exit_info, expected)


def test_a_run_on_a_real_full_disk_ends_in_one_line(corpus_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A debug run in a tmpfs of about one checkpoint (mounting one needs root: skipped, and said so, elsewhere):
    last.ckpt of step 4 fits, step 8's does not beside it; one line, last.ckpt whole, no temporary file."""
    with small_disk(tmp_path / "disk", "400k") as disk:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(fit_args(corpus_path, disk / "runs", "--trainer.max_steps", "40", "--trainer.val_check_interval",
                              "100", "--periodic_checkpoint.every_n_train_steps", "4"))
        folder = disk / "runs" / "debug" / "checkpoints"
        assert_one_line_error(capsys, exit_info, rf"could not write the checkpoint {folder}/last.ckpt: No space left "
                                                 rf"on device; {folder}/last.ckpt holds step 4\. Free some space, then "
                                                 r"resume with: .*--ckpt_path last$")
        assert checkpoint_step(folder / "last.ckpt") == 4
        assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_ctrl_c_while_reading_the_text_is_one_line(corpus_path: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    with mock.patch("lit_gpt.data.load_tokens", side_effect=KeyboardInterrupt):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(fit_args(corpus_path, tmp_path / "runs"))
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == "error: SIGINT before training started; nothing was written"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_first_step_is_one_line(signum: int, corpus_path: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """From the Trainer's start to the first step (sanity check, set-up) a signal stops at once, writing nothing."""
    runs = tmp_path / "runs"
    signal_at_start = ('--trainer.callbacks+={"class_path": "helpers.SignalAtFitStart", '
                       f'"init_args": {{"signum": {int(signum)}}}}}')
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(corpus_path, runs, signal_at_start))
    assert exit_info.value.code == 128 + signum
    err = capsys.readouterr().err
    assert err.strip() == f"error: {signal.Signals(signum).name} before training started; nothing was written"
    assert not list(runs.rglob("*.ckpt"))
    assert signal.getsignal(signum) == before  # the handlers are put back


def test_a_kept_checkpoint_read_is_each_callers_own_and_lets_the_file_go(debug_run: dict, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two callers within KEEP_SECONDS share one read, but not its dicts; past it, or once a generator has its
    model, the file is read again and no memory map keeps a deleted checkpoint's space."""
    import gc
    import shutil
    import time as clock_module

    from lit_gpt.generate import TextGenerator

    path = tmp_path / "copy.ckpt"
    shutil.copy(debug_run["last"], path)
    reads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(1) or real_load(*a, **k))
    files.forget()
    first = files.read_checkpoint(path)
    first["hyper_parameters"]["vocab"].append("#")
    first["hyper_parameters"]["config"]["n_layer"] = 99
    second = files.read_checkpoint(path)
    assert len(reads) == 1 and "#" not in second["hyper_parameters"]["vocab"]
    assert second["hyper_parameters"]["config"]["n_layer"] == 2
    now = clock_module.monotonic()
    monkeypatch.setattr(files.time, "monotonic", lambda: now + files.KEEP_SECONDS + 1)
    files.read_checkpoint(path)
    assert len(reads) == 2  # kept no longer than KEEP_SECONDS
    monkeypatch.undo()
    del first, second  # this test's own references to the mapped tensors
    generator = TextGenerator.from_checkpoint(path, "cpu")
    path.unlink()
    gc.collect()
    maps = Path("/proc/self/maps")
    if maps.is_file():
        assert str(path) not in maps.read_text()  # no mapping of the deleted file is left
    assert generator.tokenizer.chars  # while the model it read lives on
