"""The LightningModule: training and validation steps, metrics, AdamW and the learning-rate schedule."""

import math
from dataclasses import asdict, replace
from typing import Any, Literal, Optional

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torchmetrics.aggregation import MeanMetric

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.files import model_weights, read_checkpoint
from lit_gpt.model import build_model
from lit_gpt.optim import MuonAdamW, parameter_groups
from lit_gpt.steps import is_log_step


def metric_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the validation sums: float64, so that 1 device and N devices agree to ~1e-12 over ~1e5 losses;
    float32 on Apple's MPS, which has no float64 (each batch is summed on the device, then the few hundred batch sums
    are added: still ~1e-6 relative, tested)."""
    return torch.float32 if device.type == "mps" else torch.float64


def compiles_by_default(device: torch.device) -> bool:
    """``torch.compile`` pays off on CUDA; on a CPU it gains nothing at these sizes and costs ~20 s of compiling, and
    on Apple's MPS it is not dependable: off there unless asked for."""
    return device.type == "cuda"


def lr_multiplier(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """Linear warmup for ``warmup_steps``, cosine decay to ``min_ratio`` at ``decay_steps``, then flat (nanoGPT)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_ratio)


class LitGPT(L.LightningModule):
    """A character-level language model (GPT or the bigram baseline) trained with AdamW and a warmup+cosine schedule.

    Args:
        config: Model shape. ``vocab_size`` and ``block_size`` come from the data: the CLI fills them in, and from
            Python a model without ``vocab`` takes them from the Trainer's datamodule when training starts.
        arch: Which model to build: ``gpt`` (the transformer) or ``bigram`` (the lookup-table baseline).
        vocab: The characters of the vocabulary, in id order; stored in every checkpoint. null: the data's (the model
            is built when the Trainer starts, with the data's vocabulary and window).
        learning_rate: Peak learning rate, reached at the end of the warmup.
        min_lr: Learning rate at the end of the cosine decay (and after it).
        warmup_steps: Optimizer steps of linear warmup.
        lr_decay_steps: Optimizer step at which the cosine decay reaches ``min_lr``; independent of
            ``trainer.max_steps``, so extending a run does not change the schedule already planned.
        weight_decay: AdamW weight decay, applied to matrices only (not to biases, LayerNorm weights).
        beta1: AdamW beta1.
        beta2: AdamW beta2 (0.99 suits small batches of characters).
        compile: ``torch.compile`` the model (the inner nn.Module, so checkpoint keys stay clean). null: on CUDA
            only, where it pays off; a CPU gains nothing at these sizes and waits ~20 s for the compiler.
        optimizer: ``adamw`` for every parameter, or ``muon``: Muon for the 2-D weight matrices inside the
            transformer blocks and AdamW for the embeddings (tied with the head), LayerNorms and biases, with the
            same learning rate, schedule and weight decay (Muon's steps are scaled to the RMS of AdamW's).
        init_from: Fine-tuning: start from the weights of this lit_gpt checkpoint (of the same model shape) instead of
            random ones, with a fresh optimizer and schedule; the data is tokenized with its vocabulary. Give the run
            its own directory (``--trainer.logger.init_args.name``). A resumed run takes its weights from
            ``--ckpt_path`` instead.
    """

    def __init__(self, config: GPTConfig, arch: Literal["gpt", "bigram"] = "gpt", vocab: Optional[list[str]] = None,
                 learning_rate: float = 1e-3, min_lr: float = 1e-4, warmup_steps: int = 100,
                 lr_decay_steps: int = 5000, weight_decay: float = 0.1, beta1: float = 0.9,
                 beta2: float = 0.99, compile: Optional[bool] = None, optimizer: Literal["adamw", "muon"] = "adamw",
                 init_from: Optional[str] = None) -> None:
        super().__init__()
        if isinstance(config, dict):  # from a checkpoint's hyper-parameters
            config = GPTConfig(**config)
        if vocab is not None and len(vocab) != config.vocab_size:
            raise LitGPTError(f"vocab has {len(vocab)} characters but config.vocab_size is {config.vocab_size}")
        if not 0 < min_lr <= learning_rate:
            raise LitGPTError(f"need 0 < min_lr <= learning_rate, got min_lr={min_lr}, learning_rate={learning_rate}")
        if warmup_steps < 0 or lr_decay_steps < 1:
            raise LitGPTError(f"need warmup_steps >= 0 and lr_decay_steps >= 1, got {warmup_steps}, {lr_decay_steps}")
        # Stored as plain values so a checkpoint loads with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["config"])
        self.hparams["config"] = asdict(config)
        self.config = config
        self.model = build_model(arch, config) if vocab is not None else None  # None: built from the data in setup
        self.val_loss = MeanMetric(nan_strategy="disable")  # token-weighted mean, summed over devices; NaN is kept
        self.val_loss.set_dtype(torch.float64)  # set again for the device in setup()

    def configure_model(self) -> None:
        try:
            device = self.trainer.strategy.root_device
        except RuntimeError:  # LitGPT.load_from_checkpoint calls this without a Trainer: nothing to set up
            return
        use_compile = compiles_by_default(device) if self.hparams.compile is None else self.hparams.compile
        if use_compile and not getattr(self, "_compiled", False):
            self.model.compile()  # in place: state_dict keys stay "model.*", not "model._orig_mod.*"
            self._compiled = True

    def setup(self, stage: str) -> None:
        self.take_data(getattr(self.trainer, "datamodule", None))
        self.val_loss.set_dtype(metric_dtype(self.trainer.strategy.root_device))  # before it moves to the device
        if stage == "fit" and self.hparams.init_from is not None and self.trainer.ckpt_path is None:
            self.model.load_state_dict(model_weights(read_checkpoint(self.hparams.init_from)))

    def take_data(self, data: Any) -> None:
        """A model made without a vocabulary is built here with the data's vocabulary and window (the CLI links them
        before; from Python, ``trainer.fit(model, datamodule)`` does this); a model with one must agree with the
        data's. One line if they do not."""
        vocab, block_size = getattr(data, "vocab", None), getattr(data, "block_size", None)
        if self.model is not None:
            if vocab is not None and list(vocab) != list(self.hparams.vocab):
                raise LitGPTError(f"the model's vocabulary ({len(self.hparams.vocab)} characters) is not the data's "
                                  f"({len(vocab)}): give the model vocab=datamodule.vocab, or none")
            if block_size is not None and block_size > self.config.block_size:
                raise LitGPTError(f"the data's windows ({block_size} characters) are longer than the model's "
                                  f"block_size {self.config.block_size}")
            return
        if vocab is None:
            raise LitGPTError("a LitGPT made without vocab= takes the vocabulary from its datamodule: train it with "
                              "trainer.fit(model, CharDataModule(...)), or give it vocab=")
        self.config = replace(self.config, vocab_size=len(vocab), block_size=block_size or self.config.block_size)
        self.hparams["config"], self.hparams["vocab"] = asdict(self.config), list(vocab)
        self.model = build_model(self.hparams.arch, self.config)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) int64 -> logits (B, T, vocab_size)"""
        return self.model(idx)[0]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        _, loss = self.model(x, y)
        if is_log_step(self.trainer, self.global_step):
            # Only the steps that reach the logger: each self.log call is Python work on the step's path, and the
            # logger writes this step's value either way (on_step logging keeps no history between log steps).
            self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # (B, T), (B, T) with -1 where a target is not scored
        logits, _ = self.model(x)  # (B, T, vocab_size)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="none")
        mask = y.flatten() != -1  # (B*T,)
        self.val_loss.update(losses[mask])  # each scored character counts once

    def on_validation_epoch_start(self) -> None:
        # New states, owned by this process: ddp_spawn hands the module to its processes through shared memory and
        # Lightning copies only parameters and buffers, so the states built in __init__ are one tensor for all ranks.
        self.val_loss.reset()

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # synced across devices
        # Already equal on every rank; sync_dist only averages identical values (and silences Lightning's warning).
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)
        self.log("val_bpc", loss / math.log(2), sync_dist=True)  # bits per character

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        muon_groups, adamw_groups = parameter_groups(self.named_parameters(), hp.weight_decay, hp.optimizer == "muon")
        if hp.optimizer == "muon" and not muon_groups:
            raise LitGPTError(f"--model.optimizer muon needs the transformer's weight matrices; arch {hp.arch} has none")
        # One fused kernel for all of AdamW, on CUDA and on a CPU: fewer passes over the weights than foreach
        # (measured in docs/benchmarks.md).
        # Not under 16-mixed: its gradient scaler cannot unscale (and so clip) the gradients of a fused optimizer.
        fused = (self.device.type in ("cuda", "cpu") and not str(self.trainer.precision).startswith("16")) or None
        if muon_groups:
            optimizer = MuonAdamW(muon_groups, adamw_groups, lr=hp.learning_rate, betas=(hp.beta1, hp.beta2),
                                  fused=fused)
        else:
            optimizer = torch.optim.AdamW(adamw_groups, lr=hp.learning_rate, betas=(hp.beta1, hp.beta2), fused=fused)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, hp.warmup_steps, hp.lr_decay_steps, hp.min_lr / hp.learning_rate),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "lr"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Optional[float] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        """Lightning's clipping, also for a fused optimizer under bf16-mixed: Lightning refuses to clip one under any
        mixed precision, for a gradient scaler's sake, but bf16 has no scaler, so the gradients are already unscaled."""
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)  # without MixedPrecision's check
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
