"""Small-GPT techniques of later years, each a module that ``model.py`` swaps in at build time where the config asks
for it (``GPTConfig``: ``position``, ``qk_norm``, ``activation``, ``logit_cap``, ``value_embed``, ``unet``); beside
each, the module that does nothing in its place, so that nanoGPT's default path runs exactly as before. Measured in
docs/recipes.md.
"""

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class Rotary(nn.Module):
    """Rotary position embeddings (RoFormer, 2021): each pair of a head's query and key channels is rotated by an
    angle proportional to the position, so that attention scores depend on relative positions. Replaces the learned
    position table."""

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (block_size, hs/2)
        self.register_buffer("cos", angles.cos(), persistent=False)  # derived: not in checkpoints
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.gathered: tuple = (None, None, None)  # (pos, cos, sin) of the last forward at per-row positions

    def forward(self, x: torch.Tensor, pos: "int | torch.Tensor" = 0) -> torch.Tensor:
        """x (B, nh, T, hs) at positions pos.. (or each row's own, (B, T)) -> rotated (B, nh, T, hs)"""
        T, half = x.size(2), x.size(3) // 2
        if torch.is_tensor(pos):  # each row at its own positions: (B, 1, T, hs/2), the same for every head
            if self.gathered[0] is not pos:  # once per forward: every layer's queries and keys share them
                self.gathered = (pos, self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1))
            cos, sin = self.gathered[1].to(x.dtype), self.gathered[2].to(x.dtype)
        else:
            cos, sin = self.cos[pos:pos + T].to(x.dtype), self.sin[pos:pos + T].to(x.dtype)  # (T, hs/2)
        x1, x2 = x[..., :half], x[..., half:]  # (B, nh, T, hs/2) each
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class NoRotation(nn.Module):
    """In place of ``Rotary``: positions come from the learned table instead."""

    def forward(self, x: torch.Tensor, pos: "int | torch.Tensor" = 0) -> torch.Tensor:
        return x


class NoPositions(nn.Module):
    """In place of the learned position table, with rotary embeddings: adds nothing to the token embeddings."""

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=pos.device)


class HeadNorm(nn.Module):
    """QK-norm: each head's queries and keys scaled to unit RMS before their dot products, which keeps attention
    logits in range at high learning rates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, nh, T, hs) -> (B, nh, T, hs)"""
        return F.rms_norm(x, (x.size(-1),))


class ReLUSquared(nn.Module):
    """relu(x)² (Primer, 2021): in the MLP in place of GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class SoftCap(nn.Module):
    """Logit soft-capping (Gemma 2): ``cap * tanh(logits / cap)`` keeps every logit inside (-cap, cap)."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.cap * torch.tanh(logits / self.cap)


class ValueEmbeddings(nn.Module):
    """Value embeddings (modded-nanogpt): a table per layer, read by token, whose row is added to that layer's attention
    values, so each layer can move a token's own information without it passing through the residual stream."""

    def __init__(self, n_layer: int, vocab_size: int, n_embd: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(vocab_size, n_embd) for _ in range(n_layer)])

    def forward(self, idx: torch.Tensor) -> list[Optional[torch.Tensor]]:
        """idx (B, T) -> one (B, T, C) per layer"""
        return [table(idx) for table in self.tables]


class NoValueEmbeddings(nn.Module):
    """In place of ``ValueEmbeddings``: nothing for any layer."""

    def __init__(self, n_layer: int) -> None:
        super().__init__()
        self.n_layer = n_layer

    def forward(self, idx: torch.Tensor) -> list[Optional[torch.Tensor]]:
        return [None] * self.n_layer


class AddValues(nn.Module):
    """Adds a layer's value embeddings to its attention values."""

    def forward(self, v: torch.Tensor, ve: torch.Tensor) -> torch.Tensor:
        """v (B, nh, T, hs), ve (B, T, C) -> (B, nh, T, hs)"""
        B, nh, T, hs = v.size()
        return v + ve.view(B, T, nh, hs).transpose(1, 2)


class KeepValues(nn.Module):
    """In place of ``AddValues``: the values as the attention computed them."""

    def forward(self, v: torch.Tensor, ve: Optional[torch.Tensor]) -> torch.Tensor:
        return v


class Stack(nn.Module):
    """The blocks one after the other (nanoGPT)."""

    def forward(self, x: torch.Tensor, blocks: Sequence[nn.Module], caches: Sequence, values: Sequence) -> torch.Tensor:
        """x (B, T, C) through every block, block i with its KV cache and value embeddings -> (B, T, C)"""
        for block, cache, ve in zip(blocks, caches, values):
            x = block(x, cache, ve)  # (B, T, C)
        return x


class UNetStack(Stack):
    """U-net skips (modded-nanogpt): the outputs of the first half of the blocks are added, each with a learned weight
    (starting at 1), to the inputs of the second half in mirror order: the last block gets the first block's."""

    def __init__(self, n_layer: int) -> None:
        super().__init__()
        self.skip_weights = nn.Parameter(torch.ones(n_layer // 2))

    def forward(self, x: torch.Tensor, blocks: Sequence[nn.Module], caches: Sequence, values: Sequence) -> torch.Tensor:
        n, half, saved = len(blocks), len(blocks) // 2, []
        for i, (block, cache, ve) in enumerate(zip(blocks, caches, values)):
            if i >= n - half:
                x = x + self.skip_weights[i - (n - half)] * saved.pop()  # (B, T, C)
            x = block(x, cache, ve)  # (B, T, C)
            if i < half:
                saved.append(x)
        return x
