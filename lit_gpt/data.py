"""The corpus (any UTF-8 text file; tiny Shakespeare by default), its 90/10 split and the two kinds of windows.

Training draws random windows ``x = d[i:i+T]``, ``y = d[i+1:i+T+1]``; the windows of step ``s`` on rank ``r`` depend only
on ``(seed, r, s)``, so a resumed run draws exactly what an uninterrupted run would have drawn and every DDP rank draws
its own windows. Validation reads every target of the val split exactly once, so ``val_loss`` is deterministic.
"""

import hashlib
from importlib import resources
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lit_gpt.errors import LitGPTError
from lit_gpt.files import read_checkpoint
from lit_gpt.token_cache import load_tokens
from lit_gpt.tokenizer import CharTokenizer

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
Batch = tuple[torch.Tensor, torch.Tensor]


def tiny_shakespeare() -> Path:
    """The path of tiny Shakespeare (1,115,394 characters of public-domain text), shipped inside the package, after
    checking its sha256 (a few milliseconds): every default run trains on the same bytes, with no network."""
    path = Path(str(resources.files("lit_gpt") / "corpus" / "tinyshakespeare.txt"))
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise LitGPTError(f"the packaged corpus {path} cannot be read ({err.strerror}); reinstall lit_gpt, or pass "
                          f"--data.path to a text file") from None
    if digest != SHAKESPEARE_SHA256:
        raise LitGPTError(f"the packaged corpus {path} is damaged (sha256 {digest[:12]}..., expected "
                          f"{SHAKESPEARE_SHA256[:12]}...); reinstall lit_gpt, or pass --data.path to a text file")
    return path


def window_seed(seed: int, rank: int, batch: int) -> int:
    """A 63-bit seed for the windows of batch number ``batch`` on ``rank``; distinct inputs give unrelated streams."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{batch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TrainWindows(IterableDataset):
    """Endless random batches: batch ``b`` (counted from ``start_batch``) is a function of ``(seed, rank, b)`` only.

    Batches, not optimizer steps, are counted: with ``accumulate_grad_batches`` K, step ``s`` draws batches
    ``s*K .. s*K + K-1``, and a run resumed at step ``s`` starts at batch ``s*K`` (none replayed, none skipped)."""

    def __init__(self, data: torch.Tensor, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 start_batch: int = 0) -> None:
        super().__init__()
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.seed, self.rank, self.start_batch = seed, rank, start_batch
        self.offsets = torch.arange(block_size)  # (T,)

    def batch(self, number: int) -> Batch:
        """The ``(x, y)`` windows of batch ``number``: two (B, T) int64 tensors, y is x shifted left by one."""
        g = torch.Generator().manual_seed(window_seed(self.seed, self.rank, number))
        ix = torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=g)  # (B,) window starts
        idx = ix[:, None] + self.offsets  # (B, 1) + (T,) -> (B, T): one gather for the whole batch
        return self.data[idx].long(), self.data[idx + 1].long()

    def __iter__(self) -> Iterator[Batch]:
        for number in count(self.start_batch):
            yield self.batch(number)


class ValWindows(Dataset):
    """Non-overlapping windows over the whole split; every target position 1..n-1 is scored exactly once.

    With ``max_windows`` smaller than the split's window count, only that many full windows are scored, spread evenly
    from the start to the end of the split: a fixed, deterministic part of it (for big corpora).

    The tail that does not fill a window is read by one extra window aligned to the end of the split, whose targets
    already scored are masked with -1. ``num_padding`` fully masked windows can be appended so that the count divides
    evenly between devices (a padded sampler would otherwise score some windows twice).
    """

    def __init__(self, data: torch.Tensor, block_size: int, num_padding: int = 0,
                 max_windows: Optional[int] = None) -> None:
        n, T = len(data), block_size
        self.data, self.block_size = data, T
        full = (n - 1) // T
        tail = (n - 1) - full * T
        if max_windows is not None and max_windows < full + bool(tail):  # bounded: evenly spread full windows
            picked = sorted({round(i * (full - 1) / max(1, max_windows - 1)) for i in range(max_windows)})
            self.starts, self.skip = [i * T for i in picked], [0] * len(picked)
            tail = 0
        else:
            self.starts = [i * T for i in range(full)]  # window i scores targets i*T+1 .. i*T+T
            self.skip = [0] * full  # leading targets of a window that are masked
        if tail:
            self.starts.append(n - 1 - T)
            self.skip.append(T - tail)
        self.pad(num_padding)

    def pad(self, count: int) -> None:
        """Append ``count`` fully masked windows (they score nothing)."""
        self.starts += [0] * count
        self.skip += [self.block_size] * count

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> Batch:
        s, T = self.starts[i], self.block_size
        x = self.data[s : s + T].long()  # (T,)
        y = self.data[s + 1 : s + T + 1].to(torch.long, copy=True)  # (T,), a copy: masked below
        y[: self.skip[i]] = -1  # already scored (or padding): ignored by the loss
        return x, y


class CharDataModule(L.LightningDataModule):
    """Character-level text: tiny Shakespeare by default, or any UTF-8 text file, folder of files or glob.

    The text is tokenized once into a cache file (``data.cache_dir``) that later runs, and every process of a
    multi-device run, map without reading the text again; the vocabulary is known when the module is built, before
    the model is.

    Args:
        path: UTF-8 text to train on: a file, a folder (every ``.txt`` file below it, in sorted path order) or a glob
            pattern (``'books/*.txt'``; sorted); an existing file is always that file, whatever its name. null: tiny
            Shakespeare, shipped with the package (checksum-checked).
        block_size: Length of a training window in characters (the model's context length).
        batch_size: Windows per training step (per device).
        val_batch_size: Windows per validation step; defaults to ``batch_size``.
        train_fraction: Share of the text, from its start, used for training; the rest is the validation split.
        seed: Seed of the random training windows (mixed with the device rank and the step).
        pin_memory: Pin host batches for faster copies to a GPU (used only when training on CUDA).
        val_max_chars: Score at most about this many characters of the validation split, in windows spread evenly
            over it, the same ones every time and on any number of devices; a smaller split is scored whole.
            null: always the whole split.
        cache_dir: Folder of the token cache, one pair of files per text (named by a hash of its content). null:
            ``~/.cache/lit_gpt/tokens`` (or ``$XDG_CACHE_HOME/lit_gpt/tokens``).
        separator: Text put between two files of a folder or glob.
        vocab_from: Tokenize with the vocabulary of this lit_gpt checkpoint instead of the text's own (set by the
            command line for ``validate`` with ``--ckpt_path`` and for ``--model.init_from``); a character
            outside it is an error that names it.
    """

    def __init__(self, path: Optional[str] = None, block_size: int = 256, batch_size: int = 64,
                 val_batch_size: Optional[int] = None, train_fraction: float = 0.9, seed: int = 1337,
                 pin_memory: bool = True, val_max_chars: Optional[int] = 1_000_000, cache_dir: Optional[str] = None,
                 separator: str = "\n\n", vocab_from: Optional[str] = None) -> None:
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size),
                            ("val_batch_size", val_batch_size), ("val_max_chars", val_max_chars)):
            if value is not None and value < 1:
                raise LitGPTError(f"data.{name} must be a positive integer, got {value}")
        if not 0.0 < train_fraction < 1.0:
            raise LitGPTError(f"data.train_fraction must be between 0 and 1, got {train_fraction}")
        path = tiny_shakespeare() if path is None else path
        self.path, self.block_size, self.batch_size = str(path), block_size, batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.seed, self.pin_memory, self.val_max_chars = seed, pin_memory, val_max_chars
        vocab = None if vocab_from is None else read_checkpoint(vocab_from)["hyper_parameters"]["vocab"]
        ids, chars = load_tokens(path, cache_dir, separator, vocab)  # (N,) memory-mapped ids, the vocabulary
        self.tokenizer = CharTokenizer(chars)
        self._ids = ids  # the memory map behind train_data and val_data
        self._split(int(train_fraction * len(ids)))
        for split, part in (("train", self.train_data), ("val", self.val_data)):
            if len(part) < block_size + 1:
                raise LitGPTError(
                    f"the {split} split of {path} has {len(part)} characters, fewer than block_size + 1 = "
                    f"{block_size + 1}; use a longer text or a smaller --data.block_size"
                )

    def _split(self, n_train: int) -> None:
        """train_data, val_data: the first ``n_train`` ids and the rest, views of the mapped file (no copy)."""
        data = torch.from_numpy(self._ids)  # (N,)
        self.train_data, self.val_data = data[:n_train], data[n_train:]

    def __getstate__(self) -> dict:
        """Pickled (to the processes of ``ddp_spawn``) without the ids: each process maps the cache file itself, so
        they share its pages instead of each receiving a copy."""
        state = self.__dict__.copy()
        ids = state.pop("_ids")
        if isinstance(ids, np.memmap):
            state["_mapped"] = (ids.filename, ids.dtype.str, len(ids), len(self.train_data))
            del state["train_data"], state["val_data"]
        return state

    def __setstate__(self, state: dict) -> None:
        mapped = state.pop("_mapped", None)
        self.__dict__.update(state)
        if mapped is not None:
            filename, dtype, n, n_train = mapped
            self._ids = np.memmap(filename, dtype=np.dtype(dtype), mode="c", shape=(n,))
            self._split(n_train)

    @property
    def vocab(self) -> list[str]:
        """The vocabulary as a plain list of characters (stored in every checkpoint)."""
        return self.tokenizer.chars

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _pin(self) -> bool:
        return self.pin_memory and self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        # The batches drawn so far: global_step (restored before this is called) times the batches per step; a
        # checkpoint is only written between optimizer steps, never inside an accumulation.
        drawn = self.trainer.global_step * self.trainer.accumulate_grad_batches if self.trainer is not None else 0
        windows = TrainWindows(self.train_data, self.block_size, self.batch_size, self.seed, rank, drawn)
        # A loader's own generator keeps its start-up draw off the global RNG that dropout uses (exact resume).
        return DataLoader(windows, batch_size=None, pin_memory=self._pin(), generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        max_windows = None if self.val_max_chars is None else -(-self.val_max_chars // self.block_size)
        windows = ValWindows(self.val_data, self.block_size, max_windows=max_windows)
        windows.pad(-len(windows) % world)  # each device scores as many windows
        return DataLoader(windows, batch_size=self.val_batch_size, shuffle=False, pin_memory=self._pin(),
                          generator=torch.Generator())
