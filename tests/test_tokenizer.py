import pytest
import torch

from lit_gpt.tokenizer import CharTokenizer


def test_tokenizer_roundtrip() -> None:
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    assert max(ids) == tok.vocab_size - 1


def test_vocabulary_is_sorted_and_independent_of_order() -> None:
    a = CharTokenizer.from_text("hello world")
    b = CharTokenizer.from_text("dlrow olleh")
    assert a.chars == sorted(set("hello world")) == b.chars
    assert a.encode("hello") == b.encode("hello")


def test_vocabulary_serialises_as_a_plain_list() -> None:
    tok = CharTokenizer.from_text("abc\n")
    assert tok.chars == ["\n", "a", "b", "c"]
    assert CharTokenizer(list(tok.chars)).encode("cab\n") == tok.encode("cab\n")


def test_encode_names_unknown_characters() -> None:
    tok = CharTokenizer.from_text("Be a bee")
    with pytest.raises(ValueError, match=r"1 character\(s\) not in the vocabulary: '7'"):
        tok.encode("Bee7")
    with pytest.raises(ValueError, match=r"'Z', '7'"):
        tok.encode("ZZ77Be")


@pytest.mark.parametrize("chars", [[], ["a", "a"], ["ab"]])
def test_bad_vocabulary(chars: list[str]) -> None:
    with pytest.raises(ValueError):
        CharTokenizer(chars)
