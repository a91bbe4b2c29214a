"""Character-level tokenizer: one id per distinct character, ids in sorted character order."""

from collections.abc import Callable, Sequence

import torch

from lit_gpt.errors import LitGPTError


class CharTokenizer:
    """Maps characters to ids and back. The vocabulary is a sorted list, so ids never depend on the process."""

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars:
            raise LitGPTError("the vocabulary is empty: the text has no characters")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise LitGPTError("the vocabulary must be a list of single characters")
        if len(set(chars)) != len(chars):
            raise LitGPTError("the vocabulary lists a character more than once")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.stoi))

    def encode(self, text: str) -> list[int]:
        """String -> list of ids. Raises ``ValueError`` naming the characters that are not in the vocabulary."""
        missing = self.unknown(text)
        if missing:
            raise LitGPTError(f"{unknown_characters(missing, 'not in the vocabulary')} (the vocabulary has "
                              f"{self.vocab_size} characters)")
        return [self.stoi[c] for c in text]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """List (or 1-D tensor) of ids -> string."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)


def named(chars: Sequence[str], quote: Callable[[str], str] = repr, limit: int = 10) -> str:
    """``'7', 'é'``: characters for a message, the first ``limit`` of them, then `` ...`` if there are more."""
    return ", ".join(quote(c) for c in chars[:limit]) + (" ..." if len(chars) > limit else "")


def unknown_characters(unknown: Sequence[str], where: str, quote: Callable[[str], str] = repr) -> str:
    """The message for characters a vocabulary lacks, ``where`` saying which: ``2 character(s) not in the vocabulary:
    '7', 'é'`` (a prompt, a text to train on, a request each say it so)."""
    return f"{len(unknown)} character(s) {where}: {named(unknown, quote)}"
