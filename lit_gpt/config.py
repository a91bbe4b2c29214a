"""Model configuration: one dataclass, validated as soon as it is built."""

from dataclasses import dataclass

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

    @property
    def head_size(self) -> int:
        """Channels per attention head (``hs``)."""
        return self.n_embd // self.n_head
