"""What TensorBoard shows beyond the losses: generated text, attention maps, gradient norm and the best val_loss.

One callback with options, so the YAML can tune or switch off each part (``monitor.log_samples: false`` ...).
"""

import time
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_gpt.attention_image import attention_image
from lit_gpt.generate import DEFAULTS, TextGenerator
from lit_gpt.steps import is_log_step
from lit_gpt.tokenizer import CharTokenizer


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
        sample_length: Characters generated per sample (fewer than sample.py's 500: one is drawn at every validation).
        sample_temperature: Sampling temperature (0 = greedy).
        sample_top_k: Sample from the k most likely characters only (null: all).
        sample_seed: Seed of the samples: the same at every validation, so the text shows what the model learned.
        log_attention: Log attention maps at every validation (IMAGES tab, one image per layer, ``attention/layerN``).
        attention_prompt: The short text whose attention is drawn (characters along both axes).
        attention_scale: Pixels per character in the attention maps.
        log_grad_norm: Log the total L2 norm of the gradients before clipping (``grad_norm``) on the steps that log.
    """

    def __init__(self, log_samples: bool = True, sample_prompt: str = "\n", sample_length: int = 300,
                 sample_temperature: float = DEFAULTS.temperature, sample_top_k: Optional[int] = DEFAULTS.top_k,
                 sample_seed: int = DEFAULTS.seed,
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
