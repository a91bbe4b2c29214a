"""Shared fixtures: a corpus (tiny Shakespeare, shipped with the package, or synthetic text) and CLI helpers."""

import os
import random
from pathlib import Path

import pytest

from helpers import fit_args
from lit_gpt.data import tiny_shakespeare

WORDS = "thou art the king and my lord of love to be or not that is a question speak sir good night".split()


def synthetic_text(n_chars: int = 40_000, seed: int = 0) -> str:
    """Shakespeare-shaped nonsense: capitalised speaker lines and word salad, deterministic for a seed."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < n_chars:
        line = rng.choice(["ROMEO:", "JULIET:", "KING:"]) if rng.random() < 0.2 else " ".join(
            rng.choice(WORDS) for _ in range(rng.randint(3, 9))
        ).capitalize() + rng.choice([".", ",", "!", "?"])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny Shakespeare, the packaged copy. Tests pass on synthetic text as well: LIT_GPT_TEST_SYNTHETIC=1 uses it."""
    if os.environ.get("LIT_GPT_TEST_SYNTHETIC") != "1":
        return tiny_shakespeare()
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def synthetic_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "input.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def debug_run(corpus_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The debug recipe trained once for the whole session (20 steps on the corpus), for the tests that only read a
    run: ``runs`` (its folder; a test may add a run of another name there, never write into ``runs/debug``), ``last``
    and ``ckpt_dir`` (its checkpoints), ``fit_val_loss`` (the last validation's) and ``corpus``."""
    from lit_gpt.cli import cli_main

    runs = tmp_path_factory.mktemp("debug_run")
    cli = cli_main(fit_args(corpus_path, runs, "--monitor.attention_prompt", "ROMEO:\nBut soft"))
    ckpt_dir = runs / "debug" / "checkpoints"
    return {"runs": runs, "last": ckpt_dir / "last.ckpt", "ckpt_dir": ckpt_dir, "corpus": corpus_path,
            "fit_val_loss": cli.trainer.callback_metrics["val_loss"].item()}


@pytest.fixture(scope="session")
def tiny_checkpoint(debug_run: dict) -> Path:
    """The debug run's last.ckpt: a checkpoint to sample from and serve."""
    return debug_run["last"]


@pytest.fixture(autouse=True, scope="session")
def token_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    """The token cache (default ~/.cache/lit_gpt/tokens) goes to a folder of this test session, never the user's."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def fresh_master_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's ddp_spawn leaves MASTER_PORT in os.environ; without this, every later ddp_spawn run in the same
    pytest process would reuse that port while the earlier run's processes may still hold it."""
    monkeypatch.delenv("MASTER_PORT", raising=False)
