import itertools
from pathlib import Path

import pytest
import torch

from lit_gpt.token_cache import vocabulary
from lit_gpt.tokenizer import CharTokenizer

FILE_NUMBER = itertools.count()


def tokenizer_of(text: str, folder: Path) -> CharTokenizer:
    """The tokenizer a run builds for ``text``: its vocabulary as the token cache computes it."""
    path = folder / f"text{next(FILE_NUMBER)}.txt"
    path.write_text(text, encoding="utf-8")
    return CharTokenizer(vocabulary([path], separator=""))


def test_tokenizer_roundtrip(tmp_path: Path) -> None:
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    tok = tokenizer_of(text, tmp_path)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    assert max(ids) == tok.vocab_size - 1


def test_vocabulary_is_sorted_and_independent_of_order(tmp_path: Path) -> None:
    a = tokenizer_of("hello world", tmp_path)
    b = tokenizer_of("dlrow olleh", tmp_path)
    assert a.chars == sorted(set("hello world")) == b.chars
    assert a.encode("hello") == b.encode("hello")


def test_vocabulary_serialises_as_a_plain_list(tmp_path: Path) -> None:
    tok = tokenizer_of("abc\n", tmp_path)
    assert tok.chars == ["\n", "a", "b", "c"]
    assert CharTokenizer(list(tok.chars)).encode("cab\n") == tok.encode("cab\n")


def test_encode_names_unknown_characters(tmp_path: Path) -> None:
    tok = tokenizer_of("Be a bee", tmp_path)
    with pytest.raises(ValueError, match=r"1 character\(s\) not in the vocabulary: '7'"):
        tok.encode("Bee7")
    with pytest.raises(ValueError, match=r"'Z', '7'"):
        tok.encode("ZZ77Be")


@pytest.mark.parametrize("chars", [[], ["a", "a"], ["ab"]])
def test_bad_vocabulary(chars: list[str]) -> None:
    with pytest.raises(ValueError):
        CharTokenizer(chars)
