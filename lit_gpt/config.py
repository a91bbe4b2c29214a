"""Model configuration: one dataclass, validated as soon as it is built."""

from dataclasses import dataclass
from typing import Optional

from lit_gpt.errors import LitGPTError


@dataclass
class GPTConfig:
    """Shape of the transformer.

    Args:
        vocab_size: Number of distinct tokens (characters). Filled in from the data by the CLI.
        block_size: Longest context the model can read, in tokens. Filled in from ``data.block_size`` by the CLI.
        n_layer: Number of transformer blocks.
        n_head: Number of attention heads per block; must divide ``n_embd``.
        n_embd: Width of the residual stream (embedding size).
        dropout: Dropout probability used in training (0 disables dropout).
        bias: Whether Linear and LayerNorm layers have a bias, as in GPT-2.
        mlp: Whether each block has its feed-forward network after the attention (the lecture's ladder turns it off).
        residual: Whether the attention and the feed-forward network add to a residual stream (``x = x + f(x)``)
            instead of replacing it (``x = f(x)``).
        layernorm: Whether there is a LayerNorm before the attention, before the feed-forward network and at the end.
        position: "learned" (a table of positions, nanoGPT) or "rope" (rotary embeddings of queries and keys).
        qk_norm: Whether each head's queries and keys are scaled to unit RMS before attention.
        activation: The MLP's nonlinearity: "gelu" (nanoGPT) or "relu2" (relu squared).
        zero_init: Whether the projections back into the residual stream start at zero (each block starts as the
            identity) instead of GPT-2's small random values.
        tie_weights: Whether the output head shares its matrix with the token embeddings (nanoGPT).
        logit_cap: Soft-cap the logits to (-cap, cap) with a tanh; null: no cap.
        value_embed: Whether each layer has a table of value embeddings, read by token and added to its attention
            values.
        unet: Whether the first half of the blocks' outputs are added (with learned weights) to the second half's
            inputs in mirror order (U-net skips).
    """

    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True
    mlp: bool = True
    residual: bool = True
    layernorm: bool = True
    position: str = "learned"
    qk_norm: bool = False
    activation: str = "gelu"
    zero_init: bool = False
    tie_weights: bool = True
    logit_cap: Optional[float] = None
    value_embed: bool = False
    unet: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LitGPTError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise LitGPTError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}):"
                f" each head gets n_embd / n_head channels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise LitGPTError(f"dropout must be in [0, 1), got {self.dropout}")
        choices = {"position": ("learned", "rope"), "activation": ("gelu", "relu2")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise LitGPTError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.position == "rope" and self.head_size % 2:
            raise LitGPTError(f"rotary embeddings rotate pairs of channels: n_embd / n_head must be even, got "
                              f"{self.head_size}")
        if self.logit_cap is not None and not self.logit_cap > 0:
            raise LitGPTError(f"logit_cap must be positive (or null), got {self.logit_cap}")

    @property
    def head_size(self) -> int:
        """Channels per attention head (``hs``)."""
        return self.n_embd // self.n_head
