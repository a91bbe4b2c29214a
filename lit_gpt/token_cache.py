"""Text to token ids, fast and once: streamed, vectorised tokenization into a cache file that later runs map.

    text file(s) ──► UTF-8 chunks ──► code points (NumPy) ──► ids through a lookup table ──► <cache>/<key>.ids
                                                                                              <cache>/<key>.json

The ids are exactly ``CharTokenizer``'s: the vocabulary is the sorted set of every character of the whole text (or a
vocabulary given by a checkpoint). The cache key is a hash of the text's bytes, the separator between files and the
vocabulary, so a changed text gets a new cache and an unchanged one is mapped at once. One process builds a cache
while the others wait on a lock; the files appear by an atomic rename, so nobody ever reads a half-written cache. A
cache whose files disagree with each other (damaged, truncated) is rebuilt.
"""

import codecs
import glob
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
from filelock import FileLock

from lit_gpt.errors import WRITE_FIXES, LitGPTError
from lit_gpt.files import replaced_atomically
from lit_gpt.tokenizer import unknown_characters

CHUNK_BYTES = 1 << 23  # 8 MiB of text at a time: peak memory stays a small multiple of this, whatever the file size
FORMAT = "lit_gpt-char-ids-v1"  # part of the key: a new format never reads an old cache
MAX_CODE_POINT = 0x110000


def text_files(path: str | os.PathLike) -> list[Path]:
    """The files a ``--data.path`` names: a file; a folder (every file below it whose name ends in ``.txt``, in sorted
    path order); or a glob pattern (``books/*.txt``, ``corpus/**/*.md``; sorted). A path that exists is never read as
    a pattern: ``book[1].txt`` is that file."""
    text = str(path)
    if not Path(path).exists() and any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise LitGPTError(f"data path {text!r} matches no file")
        return files
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise LitGPTError(f"data folder {path} holds no .txt file (pass a file, or a glob such as '{path}/*.md')")
        return files
    if not path.is_file():
        raise LitGPTError(f"data file not found: {path} (pass --data.path a UTF-8 text file, a folder or a glob)")
    return [path]


def read_chunks(files: Sequence[Path], separator: str) -> Iterator[str]:
    """The text of ``files`` joined by ``separator``, as strings of at most ~``CHUNK_BYTES`` characters each.

    UTF-8 is decoded incrementally, so a character split between two chunks is decoded whole; a file that is not
    UTF-8 raises a one-line error naming the file and the byte offset.
    """
    for i, path in enumerate(files):
        if i:
            yield separator
        decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
        try:
            with open(path, "rb") as f:
                while block := f.read(CHUNK_BYTES):
                    yield decoder.decode(block)
                    offset += len(block)
                yield decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            raise LitGPTError(f"data file {path} is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset "
                              f"{offset + err.start} is invalid") from None
        except OSError as err:
            raise LitGPTError(f"cannot read data file {path}: {err.strerror}") from None


def code_points(chunk: str) -> np.ndarray:
    """str -> (len(chunk),) uint32 Unicode code points, without a Python object per character."""
    return np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)


def vocabulary(files: Sequence[Path], separator: str) -> list[str]:
    """The sorted set of every character of the text: ``sorted(set(text))``, computed chunk by chunk."""
    seen = np.zeros(MAX_CODE_POINT, dtype=bool)
    for chunk in read_chunks(files, separator):
        seen[code_points(chunk)] = True
    return [chr(c) for c in np.flatnonzero(seen)]  # code point order is Python's str order


def id_dtype(vocab_size: int) -> np.dtype:
    """Smallest integer dtype that holds every id (a 1 GB corpus stays 1 GB in memory, not 8)."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 2**15:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def encode_chunks(files: Sequence[Path], separator: str, vocab: Sequence[str], out) -> int:
    """Write the ids of the text to the binary file ``out``, chunk by chunk; return how many. Characters outside
    ``vocab`` raise a one-line error naming them."""
    lookup = np.full(MAX_CODE_POINT, -1, dtype=np.int32)  # code point -> id
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
    dtype, n = id_dtype(len(vocab)), 0
    chunks = read_chunks(files, separator)
    for chunk in chunks:
        ids = lookup[code_points(chunk)]  # (len(chunk),)
        if (ids < 0).any():
            unknown = all_unknown(itertools.chain([chunk], chunks), set(vocab))  # read to the end, for the count
            raise LitGPTError(unknown_characters(unknown, f"of the text are not in the checkpoint's vocabulary of "
                                                          f"{len(vocab)}"))
        out.write(ids.astype(dtype).tobytes())
        n += len(ids)
    return n


def all_unknown(chunks: Iterable[str], vocab: set[str]) -> list[str]:
    """Every distinct character of ``chunks`` outside ``vocab``, in the order they first appear."""
    unknown: dict[str, None] = {}
    for chunk in chunks:
        for ch in sorted(set(chunk) - vocab - unknown.keys(), key=chunk.index):
            unknown[ch] = None
    return list(unknown)


def content_key(files: Sequence[Path], separator: str, vocab: Optional[Sequence[str]]) -> str:
    """A hash of everything the ids depend on: the files' bytes in order, the separator, the vocabulary (if given)
    and the format."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT, separator, None if vocab is None else list(vocab), len(files)]).encode())
    for path in files:
        size = path.stat().st_size
        h.update(size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lit_gpt/tokens`` (``~/.cache/lit_gpt/tokens``): a local folder of the user's, never beside
    texts that may be read-only or shared; every process of a node finds the same files there."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lit_gpt" / "tokens"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed): one process at a time builds a cache; the others wait.
    ``filelock`` (a torch dependency) locks on Linux, macOS and Windows alike."""
    with FileLock(path):
        yield


def read_cache(ids_path: Path, meta_path: Path) -> Optional[tuple[np.ndarray, list[str]]]:
    """The cached ids (a read-only-on-disk, copy-on-write memory map) and vocabulary; None when the cache is missing
    or its two files disagree (damaged, truncated, another format)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype, n, vocab = np.dtype(meta["dtype"]), int(meta["tokens"]), list(meta["vocab"])
        if meta.get("format") != FORMAT or ids_path.stat().st_size != n * dtype.itemsize or n == 0:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ids = np.memmap(ids_path, dtype=dtype, mode="c", shape=(n,))  # pages shared by every process that maps it
    return ids, vocab


def build_cache(files: Sequence[Path], separator: str, vocab: Optional[Sequence[str]], ids_path: Path,
                meta_path: Path) -> None:
    """Tokenize into ``ids_path``, then describe it in ``meta_path``, each replaced atomically (the metadata last), so a
    reader sees a complete cache or none."""
    vocab = list(vocab) if vocab is not None else vocabulary(files, separator)
    with replaced_atomically(ids_path) as f:
        n = encode_chunks(files, separator, vocab, f)
    meta = {"format": FORMAT, "dtype": id_dtype(len(vocab)).str, "tokens": n, "vocab": vocab,
            "files": [str(p) for p in files], "separator": separator}
    with replaced_atomically(meta_path) as f:
        f.write(json.dumps(meta, ensure_ascii=False).encode("utf-8"))


def load_tokens(path: str | os.PathLike, cache_dir: Optional[str | os.PathLike] = None, separator: str = "\n\n",
                vocab: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list[str]]:
    """The ids of the text at ``path`` (file, folder or glob) and its vocabulary, from the cache or built into it.

    Args:
        path: A UTF-8 text file, a folder of ``.txt`` files, or a glob pattern.
        cache_dir: Where the cache lives; default ``~/.cache/lit_gpt/tokens`` (``$XDG_CACHE_HOME``).
        separator: Put between two files of a folder or glob.
        vocab: Tokenize with this vocabulary (a checkpoint's) instead of the text's own.
    """
    files = text_files(path)
    if all(p.stat().st_size == 0 for p in files):  # with or without a vocabulary: no ids to train or score on
        raise LitGPTError(f"data file {files[0]} is empty" if len(files) == 1 else "the data files are all empty")
    key = content_key(files, separator, vocab)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LitGPTError(f"cannot create the token cache folder {cache}: {err.strerror} (set --data.cache_dir)") from None
    ids_path, meta_path = cache / f"{key}.ids", cache / f"{key}.json"
    found = read_cache(ids_path, meta_path)  # the common case: no lock needed
    if found is not None:
        return found
    try:
        with locked(cache / f"{key}.lock"):
            found = read_cache(ids_path, meta_path)  # another process may have built it while this one waited
            if found is None:
                build_cache(files, separator, vocab, ids_path, meta_path)
                found = read_cache(ids_path, meta_path)
    except OSError as err:
        if err.errno not in WRITE_FIXES:
            raise
        raise LitGPTError(f"could not write the token cache {ids_path}: {err.strerror}; nothing was kept and "
                          f"training has not started. {WRITE_FIXES[err.errno]} (or set --data.cache_dir to a folder "
                          f"on another disk), then run the command again") from None
    assert found is not None, f"the cache just written to {ids_path} does not read back"
    return found
