"""lit_gpt: character-level GPTs trained with PyTorch Lightning."""

from lit_gpt.config import GPTConfig
from lit_gpt.errors import LitGPTError
from lit_gpt.model import GPT, Bigram
from lit_gpt.tokenizer import CharTokenizer

__all__ = ["GPT", "Bigram", "CharTokenizer", "GPTConfig", "LitGPTError"]
