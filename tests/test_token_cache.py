"""The token cache: ids exactly CharTokenizer's, built once and reused, rebuilt when the text changes or the cache is
damaged, built by one process while another waits; folders and globs of text files."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lit_gpt.token_cache as token_cache
from helpers import ROOT, wait_until
from lit_gpt.errors import LitGPTError
from lit_gpt.token_cache import load_tokens
from lit_gpt.tokenizer import CharTokenizer

def characters(n: int, start: int = 0x20) -> list[str]:
    """``n`` distinct characters that UTF-8 can encode (no surrogates), from ``start`` on."""
    return [chr(c) for c in range(start, start + n + 2048) if not 0xD800 <= c <= 0xDFFF][:n]


def text_of(chars: list[str], length: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(chars) + "".join(rng.choice(chars) for _ in range(length))  # every character at least once


def assert_same_as_the_tokenizer(text: str, path: Path, cache: Path) -> None:
    path.write_text(text, encoding="utf-8")
    ids, vocab = load_tokens(path, cache)
    tokenizer = CharTokenizer(sorted(set(text)))  # the reference: Python's own sorted set
    assert vocab == tokenizer.chars
    assert ids.tolist() == tokenizer.encode(text)


@pytest.mark.parametrize("distinct, dtype", [(65, np.uint8), (300, np.int16), (70_000, np.int32)],
                         ids=["ascii-65", "over-256", "over-65536"])
def test_ids_are_the_tokenizers(distinct: int, dtype, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 256 and over 65,536 distinct characters, and characters beyond the BMP (the 70,000 run past U+FFFF), read
    in chunks of 1000 bytes, so multi-byte characters are split between chunks."""
    monkeypatch.setattr(token_cache, "CHUNK_BYTES", 1000)
    chars = characters(distinct, start=0x20 if distinct < 1000 else 0xA0)
    assert distinct < 1000 or max(map(ord, chars)) > 0xFFFF
    text = text_of(chars + ["\U0001F600", "\n"], 20_000)
    assert_same_as_the_tokenizer(text, tmp_path / "t.txt", tmp_path / "cache")
    assert load_tokens(tmp_path / "t.txt", tmp_path / "cache")[0].dtype == dtype


def test_cache_is_reused_and_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cache = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text(text_of(list("abc\n"), 5000), encoding="utf-8")
    first, _ = load_tokens(path, cache)
    monkeypatch.setattr(token_cache, "build_cache", lambda *a, **k: pytest.fail("rebuilt an intact cache"))
    again, vocab = load_tokens(path, cache)
    assert isinstance(again, np.memmap) and again.tolist() == first.tolist() and vocab == ["\n", "a", "b", "c"]
    assert sorted(p.suffix for p in cache.iterdir()) == [".ids", ".json", ".lock"]  # no temporary file left


def test_a_changed_text_gets_a_new_cache(tmp_path: Path) -> None:
    path, cache = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text("abcabc" * 100, encoding="utf-8")
    before, _ = load_tokens(path, cache)
    path.write_text("abcabd" * 100, encoding="utf-8")  # the same size: only the content tells
    after, vocab = load_tokens(path, cache)
    assert vocab == ["a", "b", "c", "d"] and after[5] == 3 and before[5] == 2
    assert len(list(cache.glob("*.ids"))) == 2


@pytest.mark.parametrize("damage", ["truncated-ids", "missing-ids", "bad-json", "wrong-count"])
def test_a_damaged_cache_is_rebuilt(damage: str, tmp_path: Path) -> None:
    path, cache = tmp_path / "t.txt", tmp_path / "cache"
    text = text_of(list("xyz \n"), 3000)
    path.write_text(text, encoding="utf-8")
    expected = load_tokens(path, cache)[0].tolist()
    ids_file, meta_file = next(cache.glob("*.ids")), next(cache.glob("*.json"))
    if damage == "truncated-ids":
        ids_file.write_bytes(ids_file.read_bytes()[:100])
    elif damage == "missing-ids":
        ids_file.unlink()
    elif damage == "bad-json":
        meta_file.write_text("{not json")
    else:
        meta = json.loads(meta_file.read_text())
        meta_file.write_text(json.dumps({**meta, "tokens": meta["tokens"] + 1}))
    assert load_tokens(path, cache)[0].tolist() == expected
    assert ids_file.stat().st_size == len(expected)


@pytest.mark.slow
def test_two_processes_racing_build_it_once(tmp_path: Path) -> None:
    """Two processes ask for the same new cache at once: the second asks for the lock while the first builds (the
    build waits until it has asked, so they overlap on any machine, however loaded). One builds, the other waits for
    the lock and maps the finished files; both read the same ids."""
    path, cache = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text(text_of(list("abcdefgh \n"), 200_000), encoding="utf-8")
    started, asked = tmp_path / "build-started", tmp_path / "lock-asked"
    script = f"""
import sys, time
from pathlib import Path
import lit_gpt.token_cache as tc
built = []
real_build, real_locked = tc.build_cache, tc.locked
def build_once_the_other_asks(*args):
    built.append(1)
    Path({str(started)!r}).touch()
    deadline = time.monotonic() + 60
    while not Path({str(asked)!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    real_build(*args)
def ask_for_the_lock(lock_path):
    Path({str(asked)!r}).touch()
    return real_locked(lock_path)
if sys.argv[1] == "builder":
    tc.build_cache = build_once_the_other_asks
else:
    tc.locked = ask_for_the_lock
start = time.time()
ids, _ = tc.load_tokens({str(path)!r}, {str(cache)!r})
print(len(built), int(ids.sum()), len(ids), start, time.time())
"""
    builder = subprocess.Popen([sys.executable, "-c", script, "builder"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert wait_until(started.exists, timeout=60)
    waiter = subprocess.Popen([sys.executable, "-c", script, "waiter"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    procs = [builder, waiter]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outputs) == [0, 1]  # exactly one of them built the cache
    builder, waiter = sorted(outputs, key=lambda o: -int(o[0]))
    assert float(waiter[3]) < float(builder[4])  # they overlapped: the waiter asked while the build ran
    assert outputs[0][1:3] == outputs[1][1:3]
    assert len(list(cache.glob(".*tmp*"))) == 0


def test_a_folder_and_a_glob(tmp_path: Path) -> None:
    """A folder: its .txt files in sorted path order (subfolders too, hidden ones and other files left out), joined by
    the separator; a glob: the files it matches, sorted."""
    books = tmp_path / "books"
    (books / "b").mkdir(parents=True)
    (books / "b" / "two.txt").write_text("second", encoding="utf-8")
    (books / "a.txt").write_text("first", encoding="utf-8")
    (books / "c.txt").write_text("third\u00e9", encoding="utf-8")
    (books / "notes.md").write_text("left out", encoding="utf-8")
    (books / ".hidden").mkdir()
    (books / ".hidden" / "x.txt").write_text("left out", encoding="utf-8")
    text = "first\n\nsecond\n\nthird\u00e9"  # a.txt, b/two.txt, c.txt
    ids, vocab = load_tokens(books, tmp_path / "cache")
    assert vocab == sorted(set(text)) and ids.tolist() == CharTokenizer(vocab).encode(text)
    ids, vocab = load_tokens(str(books / "*.txt"), tmp_path / "cache", separator="|")
    assert ids.tolist() == CharTokenizer(vocab).encode("first|third\u00e9")


@pytest.mark.parametrize("vocab", [None, list("abcd")], ids=["its-own", "a-checkpoint's"])
def test_an_empty_text_is_one_error_with_or_without_a_vocabulary(tmp_path: Path, vocab) -> None:
    """Scoring an empty file with a checkpoint's vocabulary once wrote an empty cache and failed an assertion."""
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(LitGPTError, match=f"data file {path} is empty"):
        load_tokens(path, tmp_path / "cache", vocab=vocab)


def test_unknown_characters_with_a_given_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("abc\u00e9d\U0001F600", encoding="utf-8")
    with pytest.raises(LitGPTError, match=r"2 character\(s\) of the text are not in the checkpoint's vocabulary of "
                                          r"4: '\u00e9', '\U0001F600'"):
        load_tokens(path, tmp_path / "cache", vocab=list("abcd"))
    known = tmp_path / "u.txt"
    known.write_text("dcba", encoding="utf-8")
    ids, vocab = load_tokens(known, tmp_path / "cache", vocab=list("abcde"))
    assert ids.tolist() == [3, 2, 1, 0] and vocab == list("abcde")  # the given ids, not the text's own


def test_an_existing_path_is_never_read_as_a_glob(tmp_path: Path) -> None:
    """'book[1].txt' exists: it is that file, not the pattern that would match book1.txt beside it."""
    (tmp_path / "book[1].txt").write_text("bracketed", encoding="utf-8")
    (tmp_path / "book1.txt").write_text("the other", encoding="utf-8")
    ids, vocab = load_tokens(tmp_path / "book[1].txt", tmp_path / "cache")
    assert CharTokenizer(vocab).decode(ids.tolist()) == "bracketed"
    ids, vocab = load_tokens(str(tmp_path / "book[0-9].txt"), tmp_path / "cache")  # no such file: a pattern
    assert CharTokenizer(vocab).decode(ids.tolist()) == "the other"


def test_the_cache_is_built_without_fcntl(tmp_path: Path) -> None:
    """As on Windows, where there is no fcntl: the module imports, and two processes still build a cache once."""
    path, cache = tmp_path / "t.txt", tmp_path / "cache"
    path.write_text(text_of(list("abcdefgh \n"), 20_000), encoding="utf-8")
    script = f"""
import sys
sys.modules["fcntl"] = None  # import fcntl now raises ImportError, as on Windows
import lit_gpt.token_cache as tc
built = []
real = tc.build_cache
tc.build_cache = lambda *args: (built.append(1), real(*args))
ids, _ = tc.load_tokens({str(path)!r}, {str(cache)!r})
print(len(built), len(ids), "fcntl" in sys.modules and sys.modules["fcntl"] is not None)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outputs) == [0, 1] and outputs[0][1:] == outputs[1][1:]
    assert outputs[0][1:] == [str(len(path.read_text(encoding="utf-8"))), "False"]


def test_every_unknown_character_of_the_text_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 1000 unknown characters in the first chunk, then others in the first chunk past them and in later chunks:
    the count is of every distinct one in the text (it was of the first 1000 positions of the first bad chunk)."""
    import lit_gpt.token_cache as token_cache

    monkeypatch.setattr(token_cache, "CHUNK_BYTES", 4096)
    path = tmp_path / "t.txt"
    path.write_text("ab" + "x" * 1500 + "y" + "a" * 5000 + "z" + "b" * 5000 + "\u00e9", encoding="utf-8")
    with pytest.raises(LitGPTError, match=r"4 character\(s\) of the text are not in the checkpoint's vocabulary of "
                                          r"2: 'x', 'y', 'z', '\u00e9'$"):
        load_tokens(path, tmp_path / "cache", vocab=list("ab"))
