"""What TensorBoard shows beyond the losses: generated text, attention maps, gradient norm and the best val_loss.

One callback with options, so the YAML can tune or switch off each part (``monitor.log_samples: false`` ...).
"""

import math
import time
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.callbacks import Callback
from PIL import Image, ImageDraw, ImageFont

from lit_gpt.errors import LitGPTError
from lit_gpt.generate import TextGenerator
from lit_gpt.module import is_log_step
from lit_gpt.tokenizer import CharTokenizer

# viridis at 0, 1/4, 1/2, 3/4, 1: dark purple (no attention) to yellow (all of it)
VIRIDIS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=torch.float)
SHOWN = {"\n": "~", " ": "\u00b7", "\t": ">"}  # invisible characters on the axes (the default font is ASCII + Latin-1)


def colorize(values: torch.Tensor) -> torch.Tensor:
    """values (H, W) in [0, 1] -> (H, W, 3) uint8 viridis colours."""
    x = values.clamp(0, 1) * (len(VIRIDIS) - 1)  # (H, W) in [0, 4]
    lo = x.floor().long().clamp(max=len(VIRIDIS) - 2)  # (H, W)
    frac = (x - lo).unsqueeze(-1)  # (H, W, 1)
    return (VIRIDIS[lo] * (1 - frac) + VIRIDIS[lo + 1] * frac).round().to(torch.uint8)  # (H, W, 3)


def attention_image(att: torch.Tensor, chars: list[str], title: str, scale: int = 12,
                    columns: Optional[int] = None) -> torch.Tensor:
    """att (nh, T, T) of one layer -> (3, H, W) float image in [0, 1]: a heatmap per head, characters on the axes.

    Row t shows where position t looks (its weights over positions 0..t sum to 1), scaled to the row's maximum so
    that the strongest link of every row is yellow and no attention is dark purple; the upper triangle is empty.
    """
    nh, T, _ = att.shape
    font = ImageFont.load_default(size=max(10, scale - 1))
    cols = columns or math.ceil(math.sqrt(nh))  # a square-ish grid: 4 heads 2x2, 6 heads 3x2
    cols, rows = min(cols, nh), -(-nh // cols)
    side, label, gap, head_title = T * scale, scale + 4, 16, scale + 6
    cell_w, cell_h = label + side + gap, head_title + label + side + gap
    canvas = Image.new("RGB", (cols * cell_w + gap, rows * cell_h + 30), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 6), title, fill="black", font=font)
    shown = [SHOWN.get(c, c) for c in chars]
    for h in range(nh):
        x0 = gap + (h % cols) * cell_w + label
        y0 = 30 + (h // cols) * cell_h + head_title + label
        heat = att[h] / att[h].amax(dim=-1, keepdim=True).clamp(min=1e-9)  # (T, T), each row scaled to its max
        pixels = colorize(heat).repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # (T*scale, T*scale, 3)
        canvas.paste(Image.fromarray(pixels.numpy()), (x0, y0))
        draw.text((x0, y0 - label - head_title + 2), f"head {h}", fill="black", font=font)
        for t, ch in enumerate(shown):
            draw.text((x0 - label + 2, y0 + t * scale), ch, fill="black", font=font)  # rows: the query
            draw.text((x0 + t * scale + 2, y0 - label), ch, fill="black", font=font)  # columns: the key
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float() / 255  # (H, W, 3) uint8 -> (3, H, W)


def known_characters(text: str, tokenizer: CharTokenizer) -> str:
    """``text`` without the characters the vocabulary lacks (a prompt written for Shakespeare, on another corpus)."""
    return "".join(c for c in text if c in tokenizer.stoi)


class TrainingMonitor(Callback):
    """At every validation, on rank 0 only: a text sample and the attention maps of a fixed prompt; on the steps that
    log: the gradient norm; and ``hp_metric`` = the best val_loss so far, so runs compare in TensorBoard's HPARAMS tab.

    Generation uses its own seeded generator (never the global RNG), so it does not change training, and runs on
    rank 0 alone without collectives, so other ranks never wait on it beyond its run time.

    Args:
        log_samples: Log generated text at every validation (TEXT tab, tag ``samples``).
        sample_prompt: Prompt of the samples; characters missing from the vocabulary are dropped.
        sample_length: Characters generated per sample.
        sample_temperature: Sampling temperature (0 = greedy).
        sample_top_k: Sample from the k most likely characters only (null: all).
        sample_seed: Seed of the samples: the same at every validation, so the text shows what the model learned.
        log_attention: Log attention maps at every validation (IMAGES tab, one image per layer, ``attention/layerN``).
        attention_prompt: The short text whose attention is drawn (characters along both axes).
        attention_scale: Pixels per character in the attention maps.
        log_grad_norm: Log the total L2 norm of the gradients before clipping (``grad_norm``) on the steps that log.
    """

    def __init__(self, log_samples: bool = True, sample_prompt: str = "\n", sample_length: int = 300,
                 sample_temperature: float = 0.8, sample_top_k: Optional[int] = 200, sample_seed: int = 1337,
                 log_attention: bool = True, attention_prompt: str = "ROMEO:\nBut soft! what light",
                 attention_scale: int = 12, log_grad_norm: bool = True) -> None:
        super().__init__()
        self.log_samples, self.sample_prompt, self.sample_length = log_samples, sample_prompt, sample_length
        self.sample_temperature, self.sample_top_k, self.sample_seed = sample_temperature, sample_top_k, sample_seed
        self.log_attention, self.attention_prompt, self.attention_scale = log_attention, attention_prompt, attention_scale
        self.log_grad_norm = log_grad_norm
        self.best_val_loss = float("inf")

    def state_dict(self) -> dict[str, Any]:
        return {"best_val_loss": self.best_val_loss}  # so hp_metric stays the best of the whole run after a resume

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_loss = state_dict.get("best_val_loss", float("inf"))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # Only on steps that reach the logger: the per-parameter norms are work the other steps need not do.
        if self.log_grad_norm and is_log_step(trainer, trainer.global_step):
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            pl_module.log("grad_norm", torch.nn.utils.get_total_norm(grads, norm_type=2.0))  # foreach, not per tensor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or "val_loss" not in trainer.callback_metrics:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if not hasattr(experiment, "add_image"):  # no logger, or not TensorBoard
            return
        start, step = time.perf_counter(), trainer.global_step
        self.best_val_loss = min(self.best_val_loss, trainer.callback_metrics["val_loss"].item())
        experiment.add_scalar("hp_metric", self.best_val_loss, step)  # the HPARAMS tab's metric: best val_loss
        model, was_training = pl_module.model, pl_module.model.training
        model.eval()
        # Eager even when the model is compiled: generation (a new shape at every cache length) and the attention
        # maps (a module flag the graphs guard on) would otherwise compile graphs of their own at a validation.
        try:
            with torch.compiler.set_stance("force_eager"):
                tokenizer = CharTokenizer(pl_module.hparams.vocab)
                if self.log_samples:
                    experiment.add_text("samples", self._sample_markdown(model, tokenizer, step), step)
                if self.log_attention and hasattr(model, "attention_maps"):
                    self._log_attention(experiment, model, tokenizer, step)
        finally:
            model.train(was_training)
        experiment.add_scalar("monitor_seconds", time.perf_counter() - start, step)

    def _sample_markdown(self, model: torch.nn.Module, tokenizer: CharTokenizer, step: int) -> str:
        prompt = known_characters(self.sample_prompt, tokenizer)
        text = TextGenerator(model, tokenizer).generate(
            prompt, self.sample_length, temperature=self.sample_temperature, top_k=self.sample_top_k,
            seed=self.sample_seed)[0]
        header = (f"**step {step}**, prompt {prompt!r}, temperature {self.sample_temperature}, "
                  f"top_k {self.sample_top_k}, seed {self.sample_seed}")
        return header + "\n\n" + "\n".join("    " + line for line in text.split("\n"))  # a code block keeps lines

    def _log_attention(self, experiment: Any, model: torch.nn.Module, tokenizer: CharTokenizer, step: int) -> None:
        prompt = known_characters(self.attention_prompt, tokenizer)[: model.block_size]
        if len(prompt) < 2:
            return
        device = next(model.parameters()).device
        idx = torch.tensor([tokenizer.encode(prompt)], device=device)  # (1, T)
        maps = model.attention_maps(idx)[:, 0].float().cpu()  # (n_layer, nh, T, T)
        for layer, att in enumerate(maps):
            title = (f"layer {layer}, step {step}: where each position (row) attends among earlier ones (columns); "
                     f"rows scaled to their maximum; \u00b7 = space, ~ = newline")
            image = attention_image(att, list(prompt), title, self.attention_scale)
            experiment.add_image(f"attention/layer{layer}", image, step)


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

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        peak = self.peak_flops or get_available_flops(trainer.strategy.root_device, compute_dtype(trainer.precision))
        updates = max(2, math.ceil(self.window_size / trainer.log_every_n_steps) + 1)  # one update per logged step
        self._throughput = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=updates)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._throughput.reset()
        self._start, self._paused = time.perf_counter(), None
        self._steps, self._samples, self._tokens, self._flops = 0, 0, 0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps += 1
        self._samples += batch_size(batch)
        self._tokens += batch_tokens(batch)
        self._flops += getattr(pl_module, "flops_per_batch", 0)
        step = trainer.global_step - 1  # the step just done, as Lightning logs it
        if not trainer.is_global_zero or not is_log_step(trainer, step):
            return
        self._synchronize(trainer)  # the clock must see the work done, not just launched
        self._throughput.update(time=time.perf_counter() - self._start, batches=self._steps, samples=self._samples,
                                lengths=self._tokens, flops=self._flops or None)
        self._flops = 0  # FLOPs are per update; the others are running totals
        metrics = {f"train/{name}": value for name, value in self._throughput.compute().items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:  # a validation inside fit, not the sanity check or `validate`
            self._synchronize(trainer)
            self._paused = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and self._paused is not None:
            self._start += time.perf_counter() - self._paused  # validation time is not training time
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
