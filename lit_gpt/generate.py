"""Sampling from a trained model: load a checkpoint (weights + vocabulary + config), then generate text.

    from lit_gpt.generate import load_checkpoint, generate_text
    model, tokenizer = load_checkpoint("runs/shakespeare_char_cpu/checkpoints/last.ckpt")
    print(generate_text(model, tokenizer, "ROMEO:", max_new_tokens=200, seed=1337)[0])
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.model import build_model
from lit_gpt.tokenizer import CharTokenizer


def check_sampling_args(max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    """Raise a one-line error for settings that cannot sample."""
    if max_new_tokens < 1:
        raise LitGPTError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise LitGPTError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise LitGPTError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise LitGPTError(f"top_p must be in (0, 1], got {top_p}")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, CharTokenizer]:
    """Model (in eval mode, on ``device``) and tokenizer from a lit_gpt ``.ckpt``; nothing else is needed."""
    path = Path(path)
    if not path.is_file():
        raise LitGPTError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise LitGPTError(f"checkpoint {path} is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many kinds of errors on a file that is not a checkpoint
        raise LitGPTError(f"{path} is not a readable PyTorch checkpoint (torch.load: {type(err).__name__})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not {"config", "vocab", "arch"} <= hparams.keys() or "state_dict" not in ckpt:
        raise LitGPTError(f"{path} is not a lit_gpt checkpoint (no model config, vocabulary or weights in it)")
    config, tokenizer = GPTConfig(**hparams["config"]), CharTokenizer(hparams["vocab"])
    model = build_model(hparams["arch"], config)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """logits (B, vocab_size) -> next ids (B, 1). Temperature 0 is greedy; top-k, then top-p (nucleus) filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, [-1]]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None,
             generator: Optional[torch.Generator] = None) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` next-token batches (B, 1), each predicted from the last ``block_size`` tokens.

    idx (B, T) int64 is the prompt. Runs the whole (cropped) context for every new token.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -model.block_size :]  # (B, <=block_size): crop to the context the model can read
        logits, _ = model(idx_cond)  # (B, T, vocab_size)
        idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        yield idx_next


def encode_prompt(tokenizer: CharTokenizer, prompt: str) -> list[int]:
    """Prompt ids; an empty prompt starts from a newline (or the first character if there is no newline)."""
    if not prompt:
        prompt = "\n" if "\n" in tokenizer.stoi else tokenizer.chars[0]
    return tokenizer.encode(prompt)


def generate_text(model: nn.Module, tokenizer: CharTokenizer, prompt: str = "", max_new_tokens: int = 500,
                  num_samples: int = 1, temperature: float = 0.8, top_k: Optional[int] = 200,
                  top_p: Optional[float] = None, seed: Optional[int] = 1337) -> list[str]:
    """``num_samples`` strings, each the prompt followed by ``max_new_tokens`` generated characters."""
    device = next(model.parameters()).device
    ids = encode_prompt(tokenizer, prompt)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)  # (num_samples, T)
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    new = list(generate(model, idx, max_new_tokens, temperature, top_k, top_p, generator))
    out = torch.cat([idx, *new], dim=1)  # (num_samples, T + max_new_tokens)
    return [tokenizer.decode(row) for row in out]
