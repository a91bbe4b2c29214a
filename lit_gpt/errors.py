"""The one exception type for mistakes a user can fix (bad paths, impossible configs, unknown characters), the
exceptions that stop a run, and how an exception becomes one line."""

import errno
from collections.abc import Iterator
from typing import Optional

# What to do about a write that failed with this errno (a full disk, a quota, a read-only or forbidden folder).
WRITE_FIXES = {errno.ENOSPC: "Free some space", errno.EDQUOT: "Free some space", errno.EFBIG: "Free some space",
               errno.EROFS: "Make it writable", errno.EACCES: "Make it writable", errno.EPERM: "Make it writable"}


class LitGPTError(ValueError):
    """A user error: the entry points print its message as one line and exit with status 2, without a traceback."""


class CheckpointWriteError(LitGPTError):
    """A checkpoint could not be written (disk full, no permission); the file it would have replaced is intact."""

    def __init__(self, path: object, err: OSError) -> None:
        super().__init__(f"could not write the checkpoint {path}: {err.strerror or err}")
        self.path, self.errno = path, err.errno


def user_error(err: BaseException) -> Optional[LitGPTError]:
    """The user's mistake among the exception and its causes (a LitGPTError that jsonargparse wrapped), if any."""
    return next((e for e in causes(err) if isinstance(e, LitGPTError)), None)


def failed_write(err: BaseException) -> Optional[OSError]:
    """The OSError of a failed write (a full disk, a read-only folder) among the exception and its causes, if any."""
    return next((e for e in causes(err) if isinstance(e, OSError) and e.errno in WRITE_FIXES), None)


class TrainingStopped(Exception):
    """Training stopped on a signal (SIGINT, SIGTERM) after writing ``last.ckpt``: the CLI prints how to resume and
    exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), so a scheduler sees an interrupted job."""

    def __init__(self, signum: int, step: int, path: str) -> None:
        super().__init__(f"stopped by {signal_name(signum)} after step {step}; {path} holds that step")
        self.signum, self.step, self.path = signum, step, path


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


class StartupInterrupted(Exception):
    """SIGINT or SIGTERM before the first training step: the CLI says nothing was written and exits 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"{signal_name(signum)} before training started; nothing was written")
        self.signum = signum


class StoppedAtOnce(Exception):
    """A second SIGINT or SIGTERM in a Python session (a notebook): training stops at once, last.ckpt keeping its last
    complete write (the command line's process ends by the signal instead)."""


def causes(err: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from, in turn (not those a ``raise ... from None`` set aside)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def one_line(err: BaseException) -> str:
    """An exception's message as one line (Lightning's span several)."""
    return " ".join(str(err).split())
