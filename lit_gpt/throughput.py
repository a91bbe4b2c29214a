"""Training throughput in TensorBoard: tokens/s, windows/s, FLOP/s and MFU, timed only on the steps that log."""

import math
import time
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops, measure_flops
from lightning.pytorch.callbacks import Callback

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.model import build_model
from lit_gpt.steps import logged_step_done, step_of_batch

clock = time.perf_counter  # the throughput's clock (a test replaces it with a fake one)


def flops_per_batch(arch: str, config: GPTConfig, batch_size: int, block_size: int) -> int:
    """FLOPs of one training step (forward + backward) on a (batch_size, block_size) batch, counted by
    ``measure_flops`` on a copy of the model on the meta device (no memory, no compute); for MFU."""
    with torch.device("meta"):
        meta = build_model(arch, config)
        x = torch.zeros(batch_size, block_size, dtype=torch.long)
    return measure_flops(meta, lambda: meta(x, x)[1], lambda loss: loss)  # forward, then loss.backward()


def batch_size(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Rows (windows) in a batch."""
    return batch[0].size(0)


def batch_tokens(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Characters (tokens) in a batch; reported per second as ``items_per_sec``."""
    return batch[0].numel()


class TokenThroughput(Callback):
    """Training throughput in TensorBoard: ``train/device/items_per_sec`` (tokens/s per device),
    ``train/device/samples_per_sec`` (windows/s), ``train/device/flops_per_sec`` and ``train/device/mfu`` (when the
    device's peak is known, or given), computed by Lightning's ``Throughput`` over the last ``window_size`` steps.

    Lightning's ThroughputMonitor does the same arithmetic but reads the clock after every step, and on a GPU it calls
    ``torch.cuda.synchronize()`` first, which drains the queue of launched kernels every step. This callback reads the
    clock (and synchronizes) only on the steps that log, where the logger reads values off the device anyway; every
    step's windows, tokens and FLOPs are still counted, and time spent validating is left out.

    Args:
        window_size: Training steps averaged over (rounded up to whole logging intervals); nothing is logged before
            that many steps.
        peak_flops: The device's peak FLOP/s, for MFU where Lightning does not know it (e.g. a CPU); null: Lightning's.
    """

    def __init__(self, window_size: int = 50, peak_flops: Optional[float] = None) -> None:
        if window_size < 1:
            raise LitGPTError(f"throughput.window_size must be at least 1, got {window_size}")
        self.window_size, self.peak_flops = window_size, peak_flops
        self._throughput: Optional[Throughput] = None
        self._start: Optional[float] = None  # set while training runs
        self._paused: Optional[float] = None
        self._flops_per_batch = 0  # FLOPs of one training batch, forward and backward

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "model", None) is not None:  # else its shape comes from the data in its own setup
            self.count_flops(trainer, pl_module)
        peak = self.peak_flops or get_available_flops(trainer.strategy.root_device, compute_dtype(trainer.precision))
        updates = max(2, math.ceil(self.window_size / trainer.log_every_n_steps) + 1)  # one update per logged step
        self._throughput = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=updates)

    def count_flops(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            with torch.autograd.set_detect_anomaly(False):  # a meta model's backward, not training's (detect_anomaly)
                self._flops_per_batch = flops_per_batch(pl_module.hparams.arch, pl_module.config,
                                                        datamodule.batch_size, datamodule.block_size)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._flops_per_batch:  # a model that took its shape from the data in its setup
            self.count_flops(trainer, pl_module)
        self._throughput.reset()
        self._start, self._paused = clock(), None
        self._steps, self._samples, self._tokens, self._flops = 0, 0, 0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps += 1
        self._samples += batch_size(batch)
        self._tokens += batch_tokens(batch)
        self._flops += self._flops_per_batch
        if not trainer.is_global_zero or not logged_step_done(trainer, batch_idx):
            return  # with gradient accumulation, only the batch that completes an optimizer step logs
        self._synchronize(trainer)  # the clock must see the work done, not just launched
        self._throughput.update(time=clock() - self._start, batches=self._steps, samples=self._samples,
                                lengths=self._tokens, flops=self._flops or None)
        self._flops = 0  # FLOPs are per update; the others are running totals
        metrics = {f"train/{name}": value for name, value in self._throughput.compute().items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step_of_batch(trainer, batch_idx))  # as Lightning logs it

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:  # a validation inside fit, not the sanity check or `validate`
            self._synchronize(trainer)
            self._paused = clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and self._paused is not None:
            self._start += clock() - self._paused  # validation time is not training time
            self._paused = None

    @staticmethod
    def _synchronize(trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in under a Trainer ``precision`` setting, for looking up the device's peak FLOP/s."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float64 if precision.startswith("64") else torch.float32
