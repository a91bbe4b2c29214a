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
from typing import Optional

import torch
import torch.nn as nn

from lit_gpt.config import GPTConfig
from lit_gpt.decoder import Decoder, Row
from lit_gpt.errors import LitGPTError
from lit_gpt.files import forget, model_weights, read_checkpoint
from lit_gpt.model import build_model
from lit_gpt.sampling import DEFAULTS, RowSettings, Sampling, check_sampling_args, choose, draw_noise  # noqa: F401
from lit_gpt.tokenizer import CharTokenizer


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
    forget()  # the model holds its weights now: the file's memory map can go
    return model.to(device).eval(), tokenizer


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """logits (B, V) -> next ids (B, 1), every row with the same settings and one generator. Temperature 0 is greedy;
    top-k, then top-p (nucleus) filtering (lit_gpt.sampling)."""
    settings = [RowSettings(temperature, top_k, top_p)] * logits.size(0)
    noise = draw_noise(settings, [generator] * len(settings), logits.size(-1), logits.device)
    return choose(logits, settings, noise)[0].unsqueeze(1)  # (B, 1)


def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = DEFAULTS.temperature,
             top_k: Optional[int] = DEFAULTS.top_k, top_p: Optional[float] = DEFAULTS.top_p,
             generator: Optional[torch.Generator] = None, use_cache: bool = True,
             window_shift: Optional[int] = None) -> Iterator[torch.Tensor]:
    """``max_new_tokens`` next-token batches (B, 1) that continue the prompt idx (B, T) int64, as they come; the rows
    share ``generator``, drawing from it in turn. The settings are checked here, before the first one (so a caller
    fails before it writes anything).

    Args:
        use_cache: Use the KV cache (models without one, like the bigram, always run cache-free).
        window_shift: None for the exact mode; K for the windowed mode (1 <= K < block_size).
    """
    rows = [Row(ids, max_new_tokens, RowSettings(temperature, top_k, top_p), generator, window_shift, use_cache)
            for ids in idx.tolist()]
    return (torch.tensor(ids, device=idx.device).unsqueeze(1) for ids in run_rows(model, rows))


def check_rows(model: nn.Module, rows: list[Row]) -> None:
    """Raise a one-line error for a row that cannot be generated."""
    for row in rows:
        s = row.settings
        check_sampling_args(row.max_new_tokens, s.temperature, s.top_k, s.top_p)
        if row.window_shift is not None and not 1 <= row.window_shift < model.block_size:
            raise LitGPTError(f"window_shift must be between 1 and block_size - 1 = {model.block_size - 1}, got "
                              f"{row.window_shift}")


def run_rows(model: nn.Module, rows: list[Row]) -> Iterator[list[int]]:
    """Check the rows now, then generate them together (lit_gpt.decoder): each step's new ids, in ``rows`` order."""
    check_rows(model, rows)
    decoder = Decoder(model, slots=len(rows))
    for row in rows:
        decoder.add(row)

    def steps() -> Iterator[list[int]]:
        for _ in range(max(row.max_new_tokens for row in rows)):
            new = dict((id(row), i) for row, i in decoder.step())
            yield [new[id(row)] for row in rows]

    return steps()


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
        """Generate ``num_samples`` continuations together: one list of ``num_samples`` characters per step. Sample
        ``i`` draws with ``seed + i`` (a server's choice ``i`` of ``n`` does the same), so each is the text its seed
        gives alone. The prompt and the settings are checked here, before the first character."""
        if num_samples < 1:
            raise LitGPTError(f"num_samples must be at least 1, got {num_samples}")
        ids = self.encode_prompt(prompt)
        rows = [Row(ids, max_new_tokens, RowSettings(temperature, top_k, top_p), self.random_stream(seed, i),
                    window_shift, use_cache) for i in range(num_samples)]
        steps = run_rows(self.model, rows)
        return ([self.tokenizer.chars[i] for i in new] for new in steps)

    def random_stream(self, seed: Optional[int], offset: int = 0) -> Optional[torch.Generator]:
        """A generator seeded ``seed + offset`` on the model's device (None: torch's global random stream)."""
        return None if seed is None else torch.Generator(device=self.device).manual_seed(seed + offset)

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
