"""Test-only callbacks, importable by class path from the CLI (``helpers.LossRecorder``): pytest puts tests/ on sys.path."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import pytest
from lightning.pytorch.callbacks import Callback

from lit_gpt.checkpointing import checkpoint_step

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def fit_args(corpus: Optional[Path], runs: Path, *extra: str, config: str = DEBUG,
             subcommand: str = "fit") -> list[str]:
    """The arguments of ``train.py fit`` (or ``subcommand``) with a recipe (the debug one unless ``config``) on
    ``corpus`` (None: the recipe's text), its run under ``runs``, without a progress bar; ``extra`` after."""
    data = ["--data.path", str(corpus)] if corpus is not None else []
    return [subcommand, "--config", config, *data, "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(runs), *extra]


def callback(class_path: str, **init_args) -> str:
    """The argument that adds a callback to the Trainer's: ``--trainer.callbacks+={"class_path": ...}``."""
    return "--trainer.callbacks+=" + json.dumps({"class_path": class_path, "init_args": init_args})


def events(run_dir: Path):
    """The TensorBoard events of a run's folder, every scalar, image and text kept (an EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float = 60.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def start_process(cmd: list[str], log: Path, cwd: Path = ROOT, **env: str) -> subprocess.Popen:
    """``cmd`` as a user runs it, from ``cwd``, with these tests' callbacks importable (``helpers.*``); stderr to
    ``log``, stdout dropped."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), **env}
    with open(log, "wb") as log_file:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=log_file, cwd=cwd)


class LossRecorder(Callback):
    """Append every train_loss and val_loss, exactly (float.hex), to a text file; flushed line by line.

    A line per event: ``train <global_step> <hex>`` or ``val <global_step> <hex>``. A process killed with SIGKILL
    keeps every line it wrote (the kernel holds written bytes). Later lines for the same step win.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, kind: str, step: int, value: torch.Tensor) -> None:
        with open(self.path, "a") as f:
            f.write(f"{kind} {step} {float(value).hex()} rank{int(os.environ.get('LOCAL_RANK', 0))}\n")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            self._write("train", trainer.global_step, outputs["loss"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._write("val", trainer.global_step, trainer.callback_metrics["val_loss"])


class BatchLossRecorder(LossRecorder):
    """Every rank's loss of every training batch and a digest of its dropout generator before the batch:
    ``batch<rank> <n> <hex>`` and ``rng<rank> <n> <digest>``, ``n`` counting batches from the run's first (a resumed
    run starts at ``global_step * accumulate_grad_batches``); and ``val`` lines as ``LossRecorder`` writes them."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.n = trainer.global_step * trainer.accumulate_grad_batches

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        digest = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]
        with open(self.path, "a") as f:
            f.write(f"rng{trainer.global_rank} {self.n} {digest} -\n")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._write(f"batch{trainer.global_rank}", self.n, outputs["loss"])
        self.n += 1


def read_losses(path: Path) -> dict[tuple[str, int], str]:
    """{(kind, step): hex value}, later lines overriding earlier ones."""
    out: dict[tuple[str, int], str] = {}
    for line in Path(path).read_text().splitlines():
        kind, step, value, _ = line.split()
        out[(kind, int(step))] = value
    return out


class LocalValCounts(Callback):
    """Write what each rank's own val_loss metric counted, before the metric syncs across ranks, to
    <dir>/val_count<r>.txt: the characters it scored (its ``weight`` state), once every rank has finished."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.barrier()  # every rank's updates are done; callbacks run before the module's compute()
        path = Path(self.directory) / f"val_count{trainer.global_rank}.txt"
        path.write_text(str(int(pl_module.val_loss.weight.item())))


class PoisonWeights(Callback):
    """Set every weight to NaN just before training step ``at_step`` (to test the non-finite loss guard)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class PoisonOneValidationBatch(Callback):
    """NaN weights for validation batch ``batch_idx`` only (restored after it): one batch of non-finite losses."""

    def __init__(self, batch_idx: int = 1) -> None:
        self.batch_idx = batch_idx
        self.saved: Optional[dict] = None

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx,
                                  dataloader_idx=0) -> None:
        if batch_idx == self.batch_idx:
            self.saved = {k: v.clone() for k, v in pl_module.state_dict().items()}
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        if self.saved is not None:
            pl_module.load_state_dict(self.saved)
            self.saved = None


class SignalHandlersAtTrainStart(Callback):
    """Write the names of the SIGUSR1 and SIGTERM handlers in place when training starts to ``path`` (JSON)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import signal

        names = {name: type(signal.getsignal(getattr(signal, name))).__name__ for name in ("SIGUSR1", "SIGTERM")}
        names["SIGUSR1_default"] = signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        Path(self.path).write_text(json.dumps(names))


def assert_one_line_error(capsys: pytest.CaptureFixture, exit_info: pytest.ExceptionInfo, pattern: str) -> None:
    """A user error: exit status 2, exactly one ``error:`` line on stderr matching ``pattern``, no traceback."""
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


class GraphCounter(Callback):
    """Record how many graphs ``torch.compile`` has built so far (``torch._dynamo`` counters) after every training
    step and every validation: ``self.after_step[s]``, ``self.after_validation[s]`` for global step ``s``."""

    def __init__(self) -> None:
        self.after_step: dict[int, int] = {}
        self.after_validation: dict[int, int] = {}

    @staticmethod
    def graphs() -> int:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.after_step[trainer.global_step] = self.graphs()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.after_validation[trainer.global_step] = self.graphs()


class WindowLog(Callback):
    """Append the training windows of every step (``step`` and ``batch[0]`` as lists) to a JSON-lines file, one per
    process: ``{rank}`` in ``path`` is the process's rank."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        with open(self.path.format(rank=trainer.global_rank), "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "x": batch[0].tolist()}) + "\n")


def read_windows(path: Path) -> dict[int, list]:
    """{step: windows} from a ``WindowLog`` file, later lines for the same step winning."""
    return {row["step"]: row["x"] for row in map(json.loads, Path(path).read_text().splitlines())}


class KeepLastCopies(Callback):
    """Copy every new ``last.ckpt`` of ``checkpoint_dir`` to ``<copies>/step=<global_step>.ckpt``, looking before each
    training step (so a write at step s, after its validation or not, is copied before step s + 1 runs)."""

    def __init__(self, checkpoint_dir: str, copies: str) -> None:
        self.last, self.copies = Path(checkpoint_dir) / "last.ckpt", Path(copies)
        self._seen: Optional[int] = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if not self.last.is_file() or self.last.stat().st_mtime_ns == self._seen:
            return
        self._seen = self.last.stat().st_mtime_ns
        step = checkpoint_step(self.last)
        self.copies.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.last, self.copies / f"step={step}.ckpt")


class WorseningValLoss(Callback):
    """Replace every val_loss with a larger one than the last (before the checkpoint callbacks read it): validations
    that never improve."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.callback_metrics["val_loss"] = torch.tensor(100.0 + trainer.global_step)


FAKE_TIME = {"now": 0.0}  # a test points lit_gpt.checkpointing.clock here (monkeypatch), FakeClock moves it


class FakeClock(Callback):
    """Move ``FAKE_TIME`` by ``seconds_per_step`` at the start of each training step."""

    def __init__(self, seconds_per_step: float) -> None:
        self.seconds_per_step = seconds_per_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        FAKE_TIME["now"] += self.seconds_per_step


class FakeSlowValidation(Callback):
    """Move ``FAKE_TIME`` by ``seconds`` after every validation batch (outside the sanity check)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        if not trainer.sanity_checking:
            FAKE_TIME["now"] += self.seconds


class HeldStep(Callback):
    """Hold the training step ``step`` (0-based) before it runs until the file ``release`` exists (at most
    ``timeout`` seconds), having created ``announce``: the test sends its signals while the run is held, with no race
    against a clock."""

    def __init__(self, step: int, announce: str, release: str, timeout: float = 120.0) -> None:
        self.step, self.announce, self.release, self.timeout = step, announce, release, timeout

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.announce).touch()
            wait_until(Path(self.release).exists, timeout=self.timeout, interval=0.01)


class SignalAtFitStart(Callback):
    """Send this process a signal as fit starts, before the first step (a Ctrl-C during start-up)."""

    def __init__(self, signum: int = 2) -> None:
        self.signum = signum

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import signal

        signal.raise_signal(self.signum)


class GradNorms(Callback):
    """The gradients' total norm after every optimizer step (as clipped), in ``norms``."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        grads = [p.grad.float() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


class SignalAfterStep(Callback):
    """Send this process a signal once optimizer step ``step`` (1-based: ``global_step``) has run (Ctrl-C mid-run)."""

    def __init__(self, step: int, signum: int = 2) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        import signal

        if trainer.global_step == self.step:
            signal.raise_signal(self.signum)
