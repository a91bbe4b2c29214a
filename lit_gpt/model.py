"""A character-level GPT (nanoGPT's "baby GPT") and the bigram baseline, in plain PyTorch.

Nothing here knows about Lightning: the models take token ids and return logits (and a loss when given targets).
"""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.modern import (
    AddValues, HeadNorm, KeepValues, NoPositions, NoRotation, NoValueEmbeddings, ReLUSquared, Rotary, SoftCap, Stack,
    UNetStack, ValueEmbeddings,
)


class KVCache:
    """Keys and values of the positions every attention layer has already seen, for generation.

    Row b holds the first ``lengths[b]`` positions of its own text, so the rows of one batch can be at different
    positions (a server's streams, each as long as it has got). A forward over B rows reads and fills the first B.
    Pre-allocated to ``block_size`` positions. Positions are absolute (learned or rotary position embeddings), so a
    row is only valid for a text that has not been shifted since it was filled.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch_size, config.n_head, config.block_size, config.head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]  # (B, nh, bs, hs)
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]  # each layer's
        self.lengths = [0] * batch_size  # positions filled, per row

    def layers(self, B: int, T: int) -> tuple["int | torch.Tensor", list["LayerCache"]]:
        """The positions of T new characters in each of the first B rows (an int where every row starts there, else
        (B, T)) and each layer's view of those rows; ``advance`` once the forward is done."""
        lengths, block = self.lengths[:B], self.k[0].size(2)
        if B > len(self.lengths):
            raise LitGPTError(f"a cache of {len(self.lengths)} rows cannot hold a batch of {B}")
        if max(lengths) + T > block:
            raise LitGPTError(f"Cannot forward sequence of length {max(lengths) + T}, block size is only {block}")
        device, uniform = self.k[0].device, min(lengths) == max(lengths)
        if uniform and lengths[0] == 0:  # a prefill: the new positions attend causally among themselves
            return 0, [LayerCache(k[:B], v[:B], 0, None) for k, v in zip(self.k, self.v)]
        pos_bt = torch.tensor(lengths, device=device).unsqueeze(1) + torch.arange(T, device=device)  # (B, T)
        # Keys up to the longest row are read, each row's own masked: which keys count for a row depends on that
        # row alone.
        visible = torch.arange(max(lengths) + T, device=device) <= pos_bt.unsqueeze(-1)  # (B, T, L)
        # Where every row is at the same position, its keys go to one slice; else each row's to its own positions.
        pos = lengths[0] if uniform else (torch.arange(B, device=device).unsqueeze(1), pos_bt)  # rows (B, 1), (B, T)
        layers = [LayerCache(k[:B], v[:B], pos, visible.unsqueeze(1)) for k, v in zip(self.k, self.v)]
        return (lengths[0] if uniform else pos_bt), layers

    def advance(self, B: int, T: int) -> None:
        """The first B rows now hold T more positions."""
        self.lengths[:B] = [length + T for length in self.lengths[:B]]

    def copy_row(self, source: "KVCache", src: int, dst: int) -> None:
        """Row ``dst`` becomes a copy of ``source``'s row ``src`` (a prefill made alone joins a batch)."""
        for k, v, source_k, source_v in zip(self.k, self.v, source.k, source.v):
            k[dst], v[dst] = source_k[src], source_v[src]
        self.lengths[dst] = source.lengths[src]


class LayerCache:
    """One layer's keys and values of the rows in a forward: where the new positions go, and which keys each may
    see (None: only the new positions, causally, as in a prefill)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, at: "int | tuple[torch.Tensor, torch.Tensor]",
                 visible: Optional[torch.Tensor]) -> None:
        self.k, self.v, self.at, self.visible = k, v, at, visible  # k, v (B, nh, bs, hs); visible (B, 1, T, L)
        self.pos = at if isinstance(at, int) else at[1]  # where the new positions are: a start, or (B, T)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at their positions; return the keys and values attention reads: the new ones in a
        prefill (B, nh, T, hs), else the first L of the window (B, nh, L, hs), with ``visible`` saying which count."""
        if isinstance(self.at, int):
            self.k[:, :, self.at:self.at + k.size(2)] = k
            self.v[:, :, self.at:self.at + k.size(2)] = v
        else:  # rows at different positions: row b's new keys go to pos[b]
            rows, pos = self.at  # (B, 1), (B, T)
            self.k[rows, :, pos] = k.transpose(1, 2)  # (B, T, nh, hs) into (B, nh, bs, hs)
            self.v[rows, :, pos] = v.transpose(1, 2)
        if self.visible is None:
            return k, v
        L = self.visible.size(-1)
        return self.k[:, :, :L], self.v[:, :, :L]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position attends only to itself and earlier positions."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # back into the residual stream
        self.resid_dropout = nn.Dropout(config.dropout)
        # Later techniques, where the config asks for them (lit_gpt/modern.py); otherwise they do nothing.
        self.qk_norm = HeadNorm() if config.qk_norm else nn.Identity()
        self.rotary = Rotary(config.head_size, config.block_size) if config.position == "rope" else NoRotation()
        self.values = AddValues() if config.value_embed else KeepValues()

    def heads(self, x: torch.Tensor, pos: "int | torch.Tensor" = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) at positions pos.. (or each row's own, (B, T)) -> q, k, v, each (B, nh, T, hs)"""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = (self.rotary(self.qk_norm(t), pos) for t in (q, k))
        return q, k, v

    def forward(self, x: torch.Tensor, kv_cache: Optional[LayerCache] = None,
                ve: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, C) [, this layer's value embeddings ve (B, T, C)] -> (B, T, C). With a cache, x holds the T
        positions that follow each row's cached ones."""
        B, T, C = x.size()
        q, k, v = self.heads(x, kv_cache.pos if kv_cache is not None else 0)  # (B, nh, T, hs) each
        v = self.values(v, ve)  # (B, nh, T, hs)
        mask = None
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, nh, T, hs), or the window so far (B, nh, L, hs)
            mask = kv_cache.visible  # None (causal among the new positions) or (B, 1, T, L)
        # softmax((B, nh, T, hs) @ (B, nh, hs, L) / sqrt(hs), masked causally) @ (B, nh, L, hs) -> (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=mask is None
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    @torch.no_grad()
    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> the attention weights forward uses (B, nh, T, T), spelled out: row t is how position t
        spreads its attention over positions 0..t (for pictures)."""
        q, k, _ = self.heads(x)  # (B, nh, T, hs) each
        T = x.size(1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, hs) @ (B, nh, hs, T) -> (B, nh, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        return att.masked_fill(~causal, float("-inf")).softmax(dim=-1)  # (B, nh, T, T), rows sum to 1


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU (or relu squared), project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU() if config.activation == "gelu" else ReLUSquared()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)"""
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, 4C) inside


def layer_norm(config: GPTConfig) -> nn.Module:
    """A LayerNorm over the channels, or nothing when ``config.layernorm`` is off (the lecture's ladder)."""
    return nn.LayerNorm(config.n_embd, bias=config.bias) if config.layernorm else nn.Identity()


class Zero(nn.Module):
    """Adds nothing to a residual stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def no_mlp(config: GPTConfig) -> nn.Module:
    """The place of the MLP in a block that has none (the lecture's ladder): it adds nothing to the residual stream,
    or, in a block without one, passes x on."""
    return Zero() if config.residual else nn.Identity()


class Block(nn.Module):
    """Transformer block: communication (attention) followed by computation (MLP), each pre-LayerNorm + residual.

    The lecture's ladder builds it up step by step, by its parts: without ``config.mlp`` there is ``no_mlp`` in its
    place (and no LayerNorm before it); without ``config.layernorm`` the LayerNorms are ``nn.Identity``; without
    ``config.residual`` the block is a ``PlainBlock``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = layer_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = layer_norm(config) if config.mlp else nn.Identity()
        self.mlp = MLP(config) if config.mlp else no_mlp(config)

    def forward(self, x: torch.Tensor, kv_cache: Optional[LayerCache] = None,
                ve: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)"""
        x = x + self.attn(self.ln_1(x), kv_cache, ve)
        x = x + self.mlp(self.ln_2(x))
        return x


class PlainBlock(Block):
    """A block without residual connections (the lecture's ladder before it adds them): each part replaces x."""

    def forward(self, x: torch.Tensor, kv_cache: Optional[LayerCache] = None,
                ve: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)"""
        x = self.attn(self.ln_1(x), kv_cache, ve)
        x = self.mlp(self.ln_2(x))
        return x


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over every target that is not -1 (masked)."""
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


class GPT(nn.Module):
    """Decoder-only transformer: token + position embeddings, ``n_layer`` blocks, final LayerNorm, tied LM head.

    The later techniques of ``GPTConfig`` swap parts in at build time: rotary positions instead of the table, an
    untied head, soft-capped logits, zero-initialised projections, value embeddings, U-net skips between the blocks
    (lit_gpt/modern.py).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                wpe=nn.Embedding(config.block_size, config.n_embd)  # learned position embeddings
                if config.position == "learned" else NoPositions(),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([(Block if config.residual else PlainBlock)(config) for _ in range(config.n_layer)]),
                ln_f=layer_norm(config),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying: one matrix reads and writes tokens
        self.logit_cap = SoftCap(config.logit_cap) if config.logit_cap is not None else nn.Identity()
        self.value_embeds = ValueEmbeddings(config.n_layer, config.vocab_size, config.n_embd) if config.value_embed \
            else NoValueEmbeddings(config.n_layer)
        self.stack = UNetStack(config.n_layer) if config.unet else Stack()  # how x runs through the blocks
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale the residual projections by depth
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
                if config.zero_init:  # after the draw, so that every other weight starts as it would
                    nn.init.zeros_(param)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> attention weights (n_layer, B, nh, T, T): row t is how position t spreads its attention."""
        inputs = []  # each block's input (B, T, C), as the forward pass gives it
        hooks = [block.register_forward_pre_hook(lambda block, args: inputs.append(args[0]))
                 for block in self.transformer.h]
        try:
            self.forward(idx)  # eager, also in a compiled model: a picture is not worth a graph of its own
        finally:
            for hook in hooks:
                hook.remove()
        maps = [block.attn.weights(block.ln_1(x)) for block, x in zip(self.transformer.h, inputs)]  # (B, nh, T, T)
        return torch.stack(maps)  # (n_layer, B, nh, T, T)

    def embed(self, idx: torch.Tensor, start: "int | torch.Tensor" = 0) -> torch.Tensor:
        """idx (B, T) at positions start.. (or each row's own, (B, T)) -> token + position embeddings, after dropout
        (B, T, C)"""
        pos = start if torch.is_tensor(start) else torch.arange(start, start + idx.size(1), device=idx.device)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over the batch, or (B, T, C)
        return self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache of ``batch_size`` rows on the model's device and dtype, for up to ``block_size`` positions."""
        return KVCache(self.config, batch_size, self.lm_head.weight.device, self.lm_head.weight.dtype)

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, kv_cache: Optional[KVCache] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """idx (B, T) int64 [, targets (B, T), -1 = ignore] -> logits (B, T, vocab_size), mean loss or None

        With ``kv_cache`` (from ``new_kv_cache``), row b of idx continues the text in the cache's row b: its
        positions start at that row's length, and the row grows by T.
        """
        B, T = idx.size()
        if T > self.block_size:
            raise LitGPTError(f"Cannot forward sequence of length {T}, block size is only {self.block_size}")
        pos, caches = kv_cache.layers(B, T) if kv_cache is not None else (0, [None] * len(self.transformer.h))
        x = self.embed(idx, pos)  # (B, T, C)
        x = self.stack(x, self.transformer.h, caches, self.value_embeds(idx))  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(B, T)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.logit_cap(self.lm_head(x))  # (B, T, C) @ (C, vocab_size) -> (B, T, vocab_size)
        loss = None if targets is None else _cross_entropy(logits, targets)
        return logits, loss


class Bigram(nn.Module):
    """The bigram baseline: an embedding table whose row for the current character is read as next-character logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size  # it reads one character, but crops like GPT for a common interface
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """idx (B, T) int64 [, targets (B, T)] -> logits (B, T, vocab_size), mean loss or None"""
        logits = self.token_embedding_table(idx)  # (B, T, vocab_size)
        loss = None if targets is None else _cross_entropy(logits, targets)
        return logits, loss


ARCHITECTURES = {"gpt": GPT, "bigram": Bigram}


def build_model(arch: str, config: GPTConfig) -> nn.Module:
    """Instantiate the architecture named ``arch`` ('gpt' or 'bigram') for ``config``."""
    if arch not in ARCHITECTURES:
        raise LitGPTError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](config)
