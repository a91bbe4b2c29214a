"""Reading user-supplied files (text, checkpoints) with one clear error for each way they can be wrong."""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lit_gpt.errors import LitGPTError


def on_windows() -> bool:
    """Whether this is Windows, which cannot replace a memory-mapped file or open a folder to fsync it."""
    return os.name == "nt"


def read_utf8(path: Path, what: str, option: str) -> str:
    """The text of ``path``; ``what`` names the file and ``option`` the flag that sets it, for the error messages."""
    if path.is_dir():
        raise LitGPTError(f"{what} {path} is a directory; pass {option} a UTF-8 text file")
    if not path.is_file():
        raise LitGPTError(f"{what} not found: {path} (pass {option} a UTF-8 text file)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LitGPTError(
            f"{what} {path} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start} is invalid"
        ) from None
    except OSError as err:
        raise LitGPTError(f"cannot read {what} {path}: {err.strerror}") from None


def read_checkpoint(path: str | os.PathLike, for_resume: bool = False) -> dict[str, Any]:
    """The contents of a lit_gpt ``.ckpt`` (loaded on the CPU, plain types only), or a one-line error that says what is
    wrong with the file: missing, a directory, empty, truncated or not a PyTorch file, not a lit_gpt checkpoint, or
    (``for_resume``) without the optimizer and loop state that resuming needs."""
    path = Path(path)
    if path.is_dir():
        raise LitGPTError(f"checkpoint {path} is a directory; pass a .ckpt file written by train.py")
    if not path.is_file():
        raise LitGPTError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise LitGPTError(f"checkpoint {path} is empty (0 bytes)")
    try:
        ckpt = load_file(path)
    except Exception as err:  # torch.load raises many kinds of errors on a file that is not a checkpoint
        raise LitGPTError(f"{path} is not a readable PyTorch checkpoint: truncated, or not written by torch.save "
                          f"(torch.load: {type(err).__name__})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not {"config", "vocab", "arch"} <= hparams.keys() or "state_dict" not in ckpt:
        raise LitGPTError(f"{path} is not a lit_gpt checkpoint (no model config, vocabulary or weights in it)")
    if for_resume and not {"optimizer_states", "loops"} <= ckpt.keys():
        raise LitGPTError(f"{path} holds no optimizer or loop state, so training cannot resume from it "
                          f"(sample from it, or validate it)")
    return ckpt


KEEP_SECONDS = 60.0  # how long a read is kept for the next caller (a run's setup asks within seconds)
_kept: dict[str, Any] = {}  # the last read: {"key": (path, inode, size, mtime), "ckpt": ..., "time": ...}


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` of a checkpoint file on the CPU, plain types only. A run asks one checkpoint for its vocabulary,
    its model settings and its weights within seconds: the last read is kept for the next caller, the same version of
    the same file within ``KEEP_SECONDS``, and each caller gets its own dicts and lists (the tensors are shared), so
    one caller's change is not the next one's. ``forget`` lets it go (a long-lived server, once it has its model).

    Memory-mapped, so checking a 129 MB checkpoint's hyper-parameters reads only what is looked at. Not on Windows,
    where a mapped file cannot be replaced (a resumed run rewrites the last.ckpt it started from): there each call
    reads the file."""
    if on_windows():
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    stat = os.stat(path)
    key, now = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns), time.monotonic()
    if _kept.get("key") != key or now - _kept["time"] > KEEP_SECONDS:
        forget()
        _kept.update(key=key, ckpt=torch.load(path, map_location="cpu", weights_only=True, mmap=True), time=now)
    return own_containers(_kept["ckpt"])


def forget() -> None:
    """Let the kept read go, and with it its memory map (which would keep a deleted or replaced file's space)."""
    _kept.clear()


def own_containers(obj: Any) -> Any:
    """A copy of ``obj``'s dicts, lists and tuples, with the same tensors and values in them."""
    if isinstance(obj, dict):
        return {k: own_containers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(own_containers(v) for v in obj)
    return obj


@contextmanager
def replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new bytes to: ``.<name>.tmp-<pid>`` beside it, flushed to disk and renamed onto
    ``path`` when the block ends, removed if it fails. A reader sees the old file or the new one, never part of one
    (a rename within one folder is atomic; a temporary file elsewhere, such as $TMPDIR, would be copied). A write that
    fails (a full disk) ends the block with its OSError, however the writer reported it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as raw:
            f = RecordedWrites(raw)
            try:
                yield f  # type: ignore[misc]
            except Exception as err:
                if f.error is not None and not isinstance(err, OSError):
                    raise f.error from err
                raise
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RecordedWrites:
    """A binary file that keeps the first OSError one of its writes raised: torch's zip writer reports a full disk as
    a RuntimeError ("unexpected pos ..."), and ``replaced_atomically`` answers with the OSError itself."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:  # flush, fileno, tell, seek, ... of the file itself
        return getattr(self.f, name)


def model_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The inner model's state dict from a lit_gpt checkpoint (the LightningModule's keys without ``model.``)."""
    return {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
