"""What a run prints in the terminal: one summary line, a warning when a recipe is too big for the machine, a
progress bar that counts optimizer steps of ``max_steps`` with a time estimate (plain lines where the output is a log
file), warnings as one line, and at the end what the run made."""

import copy
import logging
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from lit_gpt.checkpointing import checkpoint_step, last_checkpoint
from lit_gpt.errors import one_line
from lit_gpt.files import load_file
from lit_gpt.steps import completes_step, logged_step_done

SLOW_RUN_SECONDS = 3600.0  # on a CPU, a run estimated to take longer than this is pointed to the CPU recipe


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting optimizer steps up to ``trainer.max_steps`` ("train 120/500 [00:31<01:43]")
    instead of the batches of an endless epoch ("Epoch 0: 120it"). It is redrawn every ``refresh_rate`` steps: a redraw
    is Python work on the step's path and reads the loss off the device (docs/benchmarks.md).

    Where the output is not a terminal (``nohup``, SLURM, CI, ``| tee``), a bar's carriage returns and escape codes
    would fill the log: there it prints one plain line instead of each redraw, and one per validation. In a notebook's
    cell (Jupyter, Colab) the step's line is rewritten in place (a carriage return, no escape code), and each
    validation leaves a line above it: a run of thousands of steps fills a few lines of the cell.
    """

    def __init__(self, refresh_rate: Optional[int] = None, process_position: int = 0, leave: bool = False,
                 plain: Optional[bool] = None) -> None:
        """Args:
            refresh_rate: Redraw every this many steps. null: on the steps that log (``trainer.log_every_n_steps``).
            process_position: The bar's line, for several bars at once (tqdm's ``position``).
            leave: Leave the finished bar on the terminal.
            plain: Plain lines instead of a bar. null: where the output is not a terminal (one line rewritten in
                place in a notebook's cell).
        """
        super().__init__(refresh_rate=refresh_rate or 1, process_position=process_position, leave=leave)
        self._on_log_steps = refresh_rate is None
        self._log_every = 1
        self.plain = plain
        self._lines = False  # this run prints lines instead of bars
        self._live = False  # the step's line is rewritten in place (a notebook's cell)
        self._open = False  # a rewritten line is on screen, not yet ended
        self._started = (0.0, 0)  # (time, step) when training started or resumed, for the rate and the time left

    @property
    def refresh_rate(self) -> int:
        return self._log_every if self._on_log_steps else super().refresh_rate

    @property
    def is_disabled(self) -> bool:
        return self._lines or super().is_disabled  # lines: every tqdm bar stays silent

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._log_every = trainer.log_every_n_steps or 1
        self._lines = self.plain if self.plain is not None else not sys.stdout.isatty()
        self._live = self.plain is None and self._lines and in_notebook()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.on_train_epoch_start(trainer)  # a run resumed mid-epoch (every resume here) has no epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar  # not TQDMProgressBar's: it would first draw "Epoch 0" of an endless epoch
        bar.set_description("train", refresh=False)
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step  # a resumed run starts where it stopped; its rate counts from here
        bar.refresh()
        self._started = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.train_progress_bar is None or not self.shows(trainer, batch_idx):
            return
        if self._lines:
            if self._enabled:  # Lightning disables the bar on every process but the first
                self.line(trainer, pl_module)
            return
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # also redraws

    def shows(self, trainer: L.Trainer, batch_idx: int) -> bool:
        """Whether the batch completed a step the bar shows: the steps that log (or every ``refresh_rate``), and the
        last; once per step with gradient accumulation."""
        if not completes_step(trainer, batch_idx):
            return False
        step = trainer.global_step
        shown = logged_step_done(trainer, batch_idx) if self._on_log_steps else step % self.refresh_rate == 0
        return shown or step == trainer.max_steps

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``step 120/500: train_loss 2.1340, val_loss 2.2010, 12,345 tokens/s, 01:43 left``"""
        step, (start_time, start_step) = trainer.global_step, self._started
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k in ("train_loss", "val_loss")}
        parts = [f"{name} {float(value):.4f}" for name, value in metrics.items()]
        seconds = time.perf_counter() - start_time
        if step > start_step and seconds > 0:
            data = trainer.datamodule
            tokens = (step - start_step) * trainer.accumulate_grad_batches * trainer.world_size * data.batch_size \
                * data.block_size
            parts.append(f"{tokens / seconds:,.0f} tokens/s")
            left = time_left(trainer, seconds / (step - start_step))
            if left is not None:
                parts.append(f"{format_seconds(left)} left")
        of = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        self.say(f"step {step}{of}: {', '.join(parts)}", keep=False)

    def say(self, text: str, keep: bool = True) -> None:
        """Print a line; in a notebook a line not kept is rewritten by the next one."""
        if not self._live:
            print(text, flush=True)
            return
        print(f"\r{text}", end="\n" if keep else "", flush=True)
        self._open = not keep

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._lines and self._enabled and not trainer.sanity_checking and "val_loss" in trainer.callback_metrics:
            at = f" at step {trainer.global_step}" if trainer.state.fn == TrainerFn.FITTING else ""  # not validate's 0
            self.say(f"validation{at}: val_loss {float(trainer.callback_metrics['val_loss']):.4f}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._end_line()
        super().teardown(trainer, pl_module, stage)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._end_line()  # a stopped run (a notebook's interrupt) keeps its last step's line too
        super().on_exception(trainer, pl_module, exception)

    def _end_line(self) -> None:
        if self._open:  # the last step's line stays, ended
            print(flush=True)
            self._open = False


def in_notebook() -> bool:
    """Whether standard output is a Jupyter kernel's (ipykernel's stream to a cell), where a carriage return
    rewrites the line and escape codes do not work."""
    return type(sys.stdout).__module__.startswith("ipykernel")


def time_left(trainer: L.Trainer, seconds_per_step: float) -> Optional[float]:
    """Seconds until ``max_steps`` at this rate, or until ``max_time`` if that comes first (None: neither is set)."""
    left = [seconds_per_step * (trainer.max_steps - trainer.global_step)] if trainer.max_steps > 0 else []
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None:
        left.append(remaining)
    return min(left) if left else None


def format_seconds(seconds: float) -> str:
    """``01:43`` or ``2:05:09``"""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class RunSummary(Callback):
    """One line before training: the model, the data and the run's length. On a CPU it also times the model on a few
    windows and, when the whole run would take longer than an hour, says how long and which recipe suits a CPU."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        data, config = trainer.datamodule, pl_module.config
        params = sum(p.numel() for p in pl_module.parameters())
        steps = trainer.max_steps - trainer.global_step
        remaining = time_left(trainer, 0.0) if trainer.max_steps < 0 else None  # only max_time bounds the run
        length = f"{steps} steps" if trainer.max_steps >= 0 else \
            f"steps for up to {format_seconds(remaining)} (max_time)" if remaining is not None else "steps"
        rank_zero_info(
            f"lit_gpt: {pl_module.hparams.arch} {config.n_layer} layers x {config.n_head} heads x {config.n_embd} wide,"
            f" {params / 1e6:.2f} M parameters; {len(data.train_data):,} training characters, vocabulary "
            f"{data.vocab_size}; {length} of {data.batch_size} x {data.block_size} characters on "
            f"{trainer.num_devices} {trainer.strategy.root_device.type} device(s)"
        )
        if trainer.strategy.root_device.type == "cpu" and steps > 0:
            per_step = cpu_step_seconds(pl_module.model, data.batch_size, data.block_size, config.vocab_size)
            if per_step * steps > SLOW_RUN_SECONDS:
                rank_zero_info(
                    f"warning: this recipe is sized for a GPU: on this CPU a step takes about {per_step:.1f} s, so "
                    f"{steps} steps take about {per_step * steps / 3600:.0f} h. For a CPU use "
                    f"configs/shakespeare_char_cpu.yaml (minutes), or a GPU"
                )


def cpu_step_seconds(model: torch.nn.Module, batch_size: int, block_size: int, vocab_size: int) -> float:
    """About how long one training step of (batch_size, block_size) takes here: a copy of the model (so that no
    gradient or RNG draw touches the run) is timed forward and backward on 4 random windows, scaled to the batch."""
    probe = copy.deepcopy(model).train()
    windows = min(4, batch_size)
    with torch.random.fork_rng():
        idx = torch.randint(vocab_size, (windows, block_size))  # (4, T)
        probe(idx, idx)[1].backward()  # warm-up
        start = time.perf_counter()
        probe(idx, idx)[1].backward()
        seconds = time.perf_counter() - start
    return seconds * batch_size / windows


class DropLightningTips(logging.Filter):
    """Leaves out Lightning's advertisement for its cloud logger (a "💡 Tip" on every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def run_report(trainer: L.Trainer) -> str:
    """``lit_gpt: done at step N; best val_loss ... at step S: PATH; last.ckpt: PATH; sample: python sample.py ...``"""
    lines = [f"lit_gpt: done at step {trainer.global_step}"]
    best = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.best_model_path), None)
    if best is not None:
        score = best.best_model_score if best.best_model_score is not None else saved_best_score(best.best_model_path)
        value = f" {float(score):.4f}" if score is not None else ""
        step = checkpoint_step(Path(best.best_model_path))
        lines.append(f"best {best.monitor}{value} at step {step}: {best.best_model_path}" if best.monitor is not None
                     else f"checkpoint (step {step}): {best.best_model_path}")  # a ModelCheckpoint without a monitor
    last = last_checkpoint(trainer)
    if last.is_file():
        lines.append(f"last.ckpt (step {checkpoint_step(last)}): {last}")
    if best is None and not last.is_file():
        lines.append("no checkpoint was written")
        return "; ".join(lines)
    sample = best.best_model_path if best is not None else str(last)
    lines.append(f"sample: {shlex.join(['python', 'sample.py', '--checkpoint', sample])}")
    return "\n  ".join(lines)


def saved_best_score(path: str) -> Optional[float]:
    """The best score a ModelCheckpoint recorded in the checkpoint file (the processes of ddp_spawn keep it)."""
    try:
        states = load_file(path).get("callbacks", {})
    except Exception:
        return None
    scores = [s["best_model_score"] for s in states.values() if isinstance(s, dict) and s.get("best_model_path") == path
              and s.get("best_model_score") is not None]
    return float(scores[0]) if scores else None


@contextmanager
def plain_output() -> Iterator[None]:
    """For the length of a run: warnings as one ``warning: ...`` line, Lightning's cloud-logger tip left out, and three
    warnings from inside Lightning 2.6 and jsonargparse that are not the user's to fix."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch.utilities.rank_zero",
                                                    "lightning.fabric.utilities.rank_zero")]
    tips = DropLightningTips()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
        # jsonargparse cannot write a torch.device default (StochasticWeightAveraging's) into config.yaml.
        warnings.filterwarnings("ignore", message=r"\s*Unable to serialize instance", module="jsonargparse")
        warnings.showwarning = show_one_line
        for logger in loggers:
            logger.addFilter(tips)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(tips)


def show_one_line(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """``warnings.showwarning`` as one line, without Python's source line."""
    print(f"warning: {one_line(message)}", file=sys.stderr if file is None else file)
