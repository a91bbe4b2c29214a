"""Sampling from a trained model: load a checkpoint once (weights + vocabulary + config), then generate or stream.

    from lit_gpt.generate import TextGenerator
    gen = TextGenerator.from_checkpoint("runs/shakespeare_char_cpu/checkpoints/last.ckpt")
    for ch in gen.stream("ROMEO:", max_new_tokens=200):
        print(ch, end="", flush=True)
    texts = gen.generate("JULIET:", max_new_tokens=200, num_samples=3, seed=7)

Three ways to produce the next character, all with the same sampling:
- cache-free: run the last ``block_size`` characters through the model for every new character;
- exact (the default): a KV cache makes each new character one position while the text fits in ``block_size``;
  past that, learned position embeddings shift every cached key and value, so each character recomputes the window
  (as fast as cache-free there, and equal to it);
- windowed (``window_shift=K``): when the window is full, keep the last ``block_size - K`` characters, prefill them
  once and continue with the cache; every character still sees at least ``block_size - K`` characters.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.files import model_weights, read_checkpoint
from lit_gpt.model import build_model
from lit_gpt.tokenizer import CharTokenizer


@dataclass(frozen=True)
class Sampling:
    """What a sample is drawn with where its caller leaves a setting out: sample.py, the server and the samples in
    TensorBoard alike, so the same seed gives the same text everywhere."""

    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: Optional[int] = 200
    top_p: Optional[float] = None
    seed: int = 1337


DEFAULTS = Sampling()


def check_sampling_args(max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float],
                        num_samples: int = 1) -> None:
    """Raise a one-line error for settings that cannot sample."""
    if max_new_tokens < 1:
        raise LitGPTError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if num_samples < 1:
        raise LitGPTError(f"num_samples must be at least 1, got {num_samples}")
    if temperature < 0:
        raise LitGPTError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise LitGPTError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise LitGPTError(f"top_p must be in (0, 1], got {top_p}")


DEVICE_HELP = "'auto' (CUDA if available, else Apple's MPS, else CPU), 'cpu', 'cuda', 'cuda:1', 'mps'"


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: CUDA, else Apple's MPS, else the CPU; any other name is checked to exist on this machine."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise LitGPTError(f"unknown device {str(device)!r} ({err})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LitGPTError(f"device {str(device)!r}: this machine has no CUDA device; use --device cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise LitGPTError(f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LitGPTError(f"device {str(device)!r}: this machine has no usable MPS device; use --device cpu (or auto)")
    return device


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, CharTokenizer]:
    """Model (in eval mode, on ``device``) and tokenizer from a lit_gpt ``.ckpt``; nothing else is needed."""
    device = resolve_device(device)  # an unusable device fails before the file is read
    ckpt = read_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    config, tokenizer = GPTConfig(**hparams["config"]), CharTokenizer(hparams["vocab"])
    model = build_model(hparams["arch"], config)
    model.load_state_dict(model_weights(ckpt))
    return model.to(device).eval(), tokenizer


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """logits (B, vocab_size) -> next ids (B, 1). Temperature 0 is greedy; top-k, then top-p (nucleus) filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, [-1]]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
        sorted_probs = sorted_logits.softmax(dim=-1)  # (B, V)
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # mass before it already reaches top_p
        drop = drop_sorted.scatter(1, order, drop_sorted)  # (B, V) back in vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
             use_cache: bool = True, window_shift: Optional[int] = None) -> Iterator[torch.Tensor]:
    """``max_new_tokens`` next-token batches (B, 1) that continue the prompt idx (B, T) int64, as they come; the
    settings are checked here, before the first one (so a caller fails before it writes anything).

    Args:
        use_cache: Use the KV cache (models without one, like the bigram, always run cache-free).
        window_shift: None for the exact mode; K for the windowed mode (1 <= K < block_size).
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p, num_samples=len(idx))
    if window_shift is not None and not 1 <= window_shift < model.block_size:
        raise LitGPTError(f"window_shift must be between 1 and block_size - 1 = {model.block_size - 1}, got "
                          f"{window_shift}")
    return next_ids(model, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache, window_shift)


@torch.no_grad()
def next_ids(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: Optional[int],
             top_p: Optional[float], generator: Optional[torch.Generator], use_cache: bool,
             window_shift: Optional[int]) -> Iterator[torch.Tensor]:
    """``generate`` once its settings are checked: one (B, 1) batch of next ids per step."""
    block = model.block_size
    cached = use_cache and hasattr(model, "new_kv_cache")
    cache = None
    for _ in range(max_new_tokens):
        if not cached:
            logits, _ = model(idx[:, -block:])  # (B, <=block, V): the whole cropped context, every time
        elif cache is not None and cache[0].length < block:
            logits, _ = model(idx[:, -1:], kv_cache=cache)  # (B, 1, V): only the newest character
        elif cache is None or window_shift is not None:
            keep = block if cache is None else block - window_shift  # the prompt, or the window after a shift
            cache = model.new_kv_cache(idx.size(0))
            logits, _ = model(idx[:, -keep:], kv_cache=cache)  # (B, <=keep, V): prefill
        else:
            logits, _ = model(idx[:, -block:])  # exact mode past block_size: cached positions are stale
        idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        yield idx_next


class TextGenerator:
    """A model and its vocabulary, loaded once, that turn prompts into text.

    Args:
        model: A GPT or Bigram in eval mode.
        tokenizer: The vocabulary the model was trained with.
    """

    def __init__(self, model: nn.Module, tokenizer: CharTokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto",
                        compiled: bool = False) -> "TextGenerator":
        """Load a ``.ckpt`` written by train.py; ``compiled`` wraps the model in ``torch.compile(dynamic=True)``."""
        model, tokenizer = load_checkpoint(path, device)
        if compiled:
            model.compile(dynamic=True)
        return cls(model, tokenizer)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt ids; an empty prompt starts from a newline (or the first character if there is no newline)."""
        if not prompt:
            prompt = "\n" if "\n" in self.tokenizer.stoi else self.tokenizer.chars[0]
        return self.tokenizer.encode(prompt)

    def stream_batch(self, prompt: str = "", max_new_tokens: int = DEFAULTS.max_new_tokens, num_samples: int = 1,
                     temperature: float = DEFAULTS.temperature, top_k: Optional[int] = DEFAULTS.top_k,
                     top_p: Optional[float] = DEFAULTS.top_p, seed: Optional[int] = DEFAULTS.seed,
                     use_cache: bool = True, window_shift: Optional[int] = None) -> Iterator[list[str]]:
        """Generate ``num_samples`` continuations as one batch: one list of ``num_samples`` characters per step. The
        prompt and the settings are checked here, before the first character."""
        ids = self.encode_prompt(prompt)
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=self.device)  # (num_samples, T)
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        steps = generate(self.model, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache,
                         window_shift)
        return ([self.tokenizer.chars[i] for i in idx_next[:, 0].tolist()] for idx_next in steps)

    def stream(self, prompt: str = "", max_new_tokens: int = DEFAULTS.max_new_tokens, **kwargs) -> Iterator[str]:
        """The characters of one continuation of ``prompt`` as they are produced (same options as generate)."""
        return (chars[0] for chars in self.stream_batch(prompt, max_new_tokens, num_samples=1, **kwargs))

    def generate(self, prompt: str = "", max_new_tokens: int = DEFAULTS.max_new_tokens, num_samples: int = 1,
                 **kwargs) -> list[str]:
        """``num_samples`` strings, each the prompt followed by ``max_new_tokens`` generated characters.

        Keyword options: temperature (0 = greedy), top_k, top_p, seed, use_cache, window_shift.
        """
        prefix = self.tokenizer.decode(self.encode_prompt(prompt))
        texts = [[prefix] for _ in range(num_samples)]
        for chars in self.stream_batch(prompt, max_new_tokens, num_samples, **kwargs):
            for text, ch in zip(texts, chars):
                text.append(ch)
        return ["".join(text) for text in texts]
