"""How the next character is drawn from a model's logits: temperature, top-k, top-p and a seeded random stream, each
row of a batch with its own settings; the settings' defaults and checks.

A draw is ``torch.multinomial``'s own (the exponential race: the argmax of probs / q, q ~ Exp(1)), written out so
that each row's noise comes from its own generator and so that ``choose`` can tell how close the race was.
"""

from dataclasses import dataclass
from typing import Optional

import torch

from lit_gpt.errors import LitGPTError


@dataclass(frozen=True)
class Sampling:
    """What a sample is drawn with where its caller leaves a setting out: sample.py, the server and the samples in
    TensorBoard alike, so the same seed gives the same text everywhere. Where they differ, on purpose: OpenAI's protocol
    gives a completion 16 characters (``max_tokens``, its own default) and a random seed where a request gives none
    (lit_gpt/openai_protocol.py); the samples at every validation are 300 characters, to keep a validation short
    (lit_gpt/monitor.py)."""

    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: Optional[int] = 200
    top_p: Optional[float] = None
    seed: int = 1337


DEFAULTS = Sampling()
# Rounding noise that a decision must clear, relative to the logits' size: a batched matrix product rounds a row's
# numbers differently from the same product over one row, by about 1e-7 of their size (measured: docs/serving.md).
TIE = 1e-5


# The lowest value of each setting that can sample (top_p: above 0, and at most 1), for sample.py's checks and the
# server's (which add the stated limits of a request).
LOWEST = {"max_new_tokens": 1, "num_samples": 1, "temperature": 0, "top_k": 1, "top_p": 0}


def check_sampling_args(max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float],
                        num_samples: int = 1) -> None:
    """Raise a one-line error for settings that cannot sample."""
    for name, value in (("max_new_tokens", max_new_tokens), ("num_samples", num_samples), ("top_k", top_k)):
        if value is not None and value < LOWEST[name]:
            raise LitGPTError(f"{name} must be at least {LOWEST[name]}, got {value}")
    if temperature < LOWEST["temperature"]:
        raise LitGPTError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_p is not None and not LOWEST["top_p"] < top_p <= 1.0:
        raise LitGPTError(f"top_p must be in (0, 1], got {top_p}")


@dataclass(frozen=True)
class RowSettings:
    """One row's sampling settings (checked by ``check_sampling_args``)."""

    temperature: float = DEFAULTS.temperature
    top_k: Optional[int] = DEFAULTS.top_k
    top_p: Optional[float] = DEFAULTS.top_p


def draw_noise(settings: list[RowSettings], generators: list[Optional[torch.Generator]], vocab_size: int,
               device: torch.device) -> torch.Tensor:
    """Each sampled row's Exp(1) draws from its own generator, in row order (B, V); a greedy row draws nothing."""
    noise = torch.ones(len(settings), vocab_size, device=device)  # (B, V)
    for row, (s, generator) in enumerate(zip(settings, generators)):
        if s.temperature > 0:
            noise[row].exponential_(1, generator=generator)
    return noise


def filtered(z: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
             band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z (B, V), each row's top_k and top_p (B, 1) -> the candidates each row keeps (top-k, then top-p: the mass
    before a candidate is short of p), those it keeps whatever noise of ``band`` (B, 1) does, and those it may."""
    V = z.size(-1)
    sorted_z, order = torch.sort(z, dim=-1, descending=True)  # (B, V)
    kth = sorted_z.gather(1, top_k - 1)  # (B, 1): the k-th largest
    sorted_probs = sorted_z.masked_fill(sorted_z < kth, float("-inf")).softmax(dim=-1)  # (B, V)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass before each candidate
    unsorted = lambda t: t.scatter(1, order, t)  # noqa: E731 (sorted order -> vocabulary order)
    kept = (z >= kth) & unsorted(before < top_p)  # (B, V)
    surely = ((z > kth + 2 * band) | (top_k == V)) & unsorted(before < top_p - 4 * band)
    maybe = (z >= kth - 2 * band) & unsorted(before < top_p + 4 * band)
    return kept, surely, maybe


def choose(logits: torch.Tensor, settings: list[RowSettings], noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V), noise (B, V) from ``draw_noise`` -> next ids (B,), and which rows' id rounding noise of ``TIE``
    could change: a rival within the noise of the winner, counting the candidates that the noise could move across a
    top-k or top-p boundary. Every operation is row by row: a row's id does not depend on the other rows."""
    logits = logits.float()
    B, V = logits.shape
    device = logits.device
    greedy = torch.tensor([s.temperature == 0 for s in settings], device=device).unsqueeze(1)  # (B, 1)
    temperature = torch.tensor([s.temperature or 1.0 for s in settings], device=device).unsqueeze(1)  # (B, 1)
    top_k = torch.tensor([min(s.top_k or V, V) for s in settings], device=device).unsqueeze(1)  # (B, 1)
    top_p = torch.tensor([s.top_p if s.top_p is not None and s.top_p < 1 else 2.0 for s in settings],
                         device=device).unsqueeze(1)  # (B, 1); 2: keeps everything
    z = logits / temperature  # (B, V)
    band = TIE * (1 + logits.abs().amax(dim=1, keepdim=True)) / temperature  # (B, 1): the noise, in z's units
    if bool((top_k < V).any() | (top_p <= 1).any()):
        kept, surely, maybe = filtered(z, top_k, top_p, band)
    else:  # no row filters: every candidate is kept, surely (the same ids, fewer operations)
        kept = surely = maybe = torch.ones_like(z, dtype=torch.bool)
    probs = z.masked_fill(~kept, float("-inf")).softmax(dim=-1)  # (B, V)
    scores = torch.where(greedy, logits, probs / noise)  # (B, V): the race (greedy: the logits)
    winner = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
    # Which ids the noise could have given instead: those kept or within the noise of a boundary, racing with
    # exp(z - max) / q (greedy: z), whose ratios the noise moves by about 2 * band.
    race = torch.where(greedy, z, (z - z.amax(dim=1, keepdim=True)).exp() / noise)  # (B, V)
    best = race.gather(1, winner)  # (B, 1)
    rivals = race.masked_fill(~torch.where(greedy, True, maybe), float("-inf")).scatter(1, winner, float("-inf"))
    close = torch.where(greedy, rivals.amax(dim=1, keepdim=True) > best - 4 * band,
                        (rivals.amax(dim=1, keepdim=True) > best * (1 - 4 * band)) | ~surely.gather(1, winner))
    return winner[:, 0], close[:, 0]  # (B,), (B,)
