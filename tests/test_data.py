import hashlib
from pathlib import Path
from unittest import mock

import pytest
import numpy as np
import torch

from lit_gpt import data as data_mod
from lit_gpt.data import SHAKESPEARE_SHA256, CharDataModule, TrainWindows, ValWindows, tiny_shakespeare
from lit_gpt.token_cache import id_dtype
from lit_gpt.errors import LitGPTError


def test_train_windows_are_shifted_by_one_and_in_range() -> None:
    d = torch.arange(100, dtype=torch.int32)  # d[i] == i makes offsets visible
    windows = TrainWindows(d, block_size=10, batch_size=64, seed=0)
    for step in range(20):
        x, y = windows.batch(step)
        assert x.shape == y.shape == (64, 10) and x.dtype == torch.long
        torch.testing.assert_close(y, x + 1)  # y is x shifted by one
        torch.testing.assert_close(x[:, 1:], x[:, :-1] + 1)  # contiguous windows
        assert x.min() >= 0 and y.max() <= 99  # i + T stays inside the data


def test_train_windows_reach_both_ends() -> None:
    d = torch.arange(20)
    windows = TrainWindows(d, block_size=4, batch_size=256, seed=0)
    starts = torch.cat([windows.batch(s)[0][:, 0] for s in range(10)])
    assert starts.min() == 0 and starts.max() == 20 - 4 - 1


def test_train_windows_depend_only_on_seed_rank_and_step() -> None:
    d = torch.arange(10_000)
    a = TrainWindows(d, 8, 4, seed=1)
    b = TrainWindows(d, 8, 4, seed=1, start_batch=5)
    torch.testing.assert_close(a.batch(7)[0], b.batch(7)[0])
    torch.testing.assert_close(next(iter(b))[0], a.batch(5)[0])  # iteration starts at start_batch
    assert not torch.equal(a.batch(7)[0], a.batch(8)[0])
    assert not torch.equal(a.batch(7)[0], TrainWindows(d, 8, 4, seed=1, rank=1).batch(7)[0])
    assert not torch.equal(a.batch(7)[0], TrainWindows(d, 8, 4, seed=2).batch(7)[0])


@pytest.mark.parametrize("n", [33, 40, 41, 100])
@pytest.mark.parametrize("padding", [0, 3])
def test_val_windows_score_every_target_exactly_once(n: int, padding: int) -> None:
    d = torch.arange(n)
    windows = ValWindows(d, block_size=8, num_padding=padding)
    scored = torch.zeros(n, dtype=torch.long)
    for i in range(len(windows)):
        x, y = windows[i]
        assert x.shape == y.shape == (8,)
        kept = y[y != -1]
        if len(kept):
            torch.testing.assert_close(kept, x[y != -1] + 1)
        scored.index_add_(0, kept, torch.ones_like(kept))
    assert scored[0] == 0 and torch.all(scored[1:] == 1)  # every target position 1..n-1 once
    assert all(torch.all(windows[len(windows) - 1 - j][1] == -1) for j in range(padding))


def test_compact_dtype() -> None:
    assert id_dtype(65) == np.uint8
    assert id_dtype(256) == np.uint8
    assert id_dtype(257) == np.int16
    assert id_dtype(100_000) == np.int32


def test_datamodule_split_and_vocab(corpus_path: Path) -> None:
    dm = CharDataModule(path=str(corpus_path), block_size=16, batch_size=4)
    text = corpus_path.read_text(encoding="utf-8")
    assert dm.vocab == sorted(set(text)) and dm.vocab_size == len(dm.vocab)
    assert len(dm.train_data) == int(0.9 * len(text)) and len(dm.train_data) + len(dm.val_data) == len(text)
    assert dm.train_data.dtype == torch.uint8
    assert dm.tokenizer.decode(dm.val_data[:50]) == text[len(dm.train_data):][:50]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    val_batches = list(dm.val_dataloader())
    assert sum(int((y != -1).sum()) for _, y in val_batches) == len(dm.val_data) - 1


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(LitGPTError, match="data file not found: .*nope.txt .*--data.path"):
        CharDataModule(path=str(tmp_path / "nope.txt"))


def test_a_folder_without_text_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("not a .txt file")
    with pytest.raises(LitGPTError, match=r"data folder .* holds no \.txt file \(pass a file, or a glob"):
        CharDataModule(path=str(tmp_path))


def test_a_glob_that_matches_nothing(tmp_path: Path) -> None:
    with pytest.raises(LitGPTError, match=r"data path '.*/\*\.txt' matches no file"):
        CharDataModule(path=str(tmp_path / "*.txt"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1") * 100)
    with pytest.raises(LitGPTError, match="not UTF-8 text: byte 0xe9 at offset 3"):
        CharDataModule(path=str(path), block_size=8)


def test_empty_corpus(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(LitGPTError, match="is empty"):
        CharDataModule(path=str(path))


@pytest.mark.parametrize("n_chars, split", [(50, "train"), (200, "val")])
def test_corpus_shorter_than_a_block(tmp_path: Path, n_chars: int, split: str) -> None:
    path = tmp_path / "short.txt"
    path.write_text(("abcdefghij" * 100)[:n_chars])
    with pytest.raises(LitGPTError, match=f"the {split} split .* fewer than block_size \\+ 1 = 65"):
        CharDataModule(path=str(path), block_size=64)


@pytest.mark.parametrize("kwargs", [dict(block_size=0), dict(batch_size=0), dict(train_fraction=1.0)])
def test_bad_sizes(corpus_path: Path, kwargs: dict) -> None:
    with pytest.raises(LitGPTError):
        CharDataModule(path=str(corpus_path), **kwargs)


def test_the_default_corpus_is_tiny_shakespeare_shipped_in_the_package(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No path, no network, any working directory: the packaged copy, its bytes checked."""
    monkeypatch.chdir(tmp_path)
    with mock.patch("urllib.request.urlopen", side_effect=AssertionError("no download")):
        dm = CharDataModule(block_size=64)
    assert Path(dm.path) == tiny_shakespeare() and Path(dm.path).is_relative_to(Path(data_mod.__file__).parent)
    assert hashlib.sha256(Path(dm.path).read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert len(dm.train_data) + len(dm.val_data) == 1_115_394 and dm.vocab_size == 65
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory


def test_a_damaged_packaged_corpus_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(LitGPTError, match=r"packaged corpus .*tinyshakespeare.txt is damaged .*reinstall lit_gpt"):
        CharDataModule()


@pytest.mark.parametrize("name, value", [("val_max_chars", 0), ("val_batch_size", 0), ("val_max_chars", -5)])
def test_non_positive_sizes_are_refused(corpus_path: Path, name: str, value: int) -> None:
    with pytest.raises(LitGPTError, match=f"data.{name} must be a positive integer, got {value}"):
        CharDataModule(path=str(corpus_path), **{name: value})


@pytest.mark.parametrize("max_windows", [1, 4, 7])
def test_bounded_val_windows_are_a_fixed_spread_of_full_windows(max_windows: int) -> None:
    """max_windows of the split's 12 full windows (n = 100, block 8), spread from its start to its end, the same
    every time; each scores all its targets, and no target twice."""
    d = torch.arange(100)
    windows = ValWindows(d, block_size=8, max_windows=max_windows)
    starts = [int(windows[i][0][0]) for i in range(len(windows))]
    assert len(starts) == max_windows and starts == sorted(set(starts))
    assert starts[0] == 0 and (max_windows == 1 or starts[-1] == 88)  # the first and the last full window
    assert all((windows[i][1] != -1).all() for i in range(len(windows)))
    assert starts == [int(ValWindows(d, 8, max_windows=max_windows)[i][0][0]) for i in range(max_windows)]


def test_val_max_chars_bounds_only_a_longer_split(corpus_path: Path, tmp_path: Path) -> None:
    whole = CharDataModule(path=str(corpus_path), block_size=32)
    bounded = CharDataModule(path=str(corpus_path), block_size=32, val_max_chars=3200)
    assert len(bounded.val_dataloader().dataset) == 100
    assert len(whole.val_dataloader().dataset) == -(-(len(whole.val_data) - 1) // 32)  # default: the whole split
    assert len(whole.val_data) < 1_000_000  # ... because it is shorter than the default bound
