"""Two CPU processes (ddp_spawn, gloo): each rank draws its own windows, and val_loss does not depend on the count."""

from pathlib import Path

import pytest

from helpers import callback, fit_args, read_windows
from lit_gpt.cli import cli_main

pytestmark = pytest.mark.slow  # each test starts two processes


def test_ddp_ranks_draw_different_windows(corpus_path: Path, tmp_path: Path) -> None:
    cli_main(fit_args(corpus_path, tmp_path / "runs", "--trainer.max_steps", "8", "--trainer.strategy", "ddp_spawn",
                      "--trainer.devices", "2", callback("helpers.WindowLog", path=str(tmp_path / "rank{rank}.jsonl"))))
    rank0, rank1 = (list(read_windows(tmp_path / f"rank{r}.jsonl").values()) for r in (0, 1))
    assert len(rank0) == len(rank1) == 8
    batches0 = {tuple(map(tuple, batch)) for batch in rank0}
    batches1 = {tuple(map(tuple, batch)) for batch in rank1}
    assert len(batches0) == len(batches1) == 8  # every step draws new windows
    assert all(a != b for a, b in zip(rank0, rank1))  # the ranks differ at every step
    assert not batches0 & batches1  # and no rank's batch is another rank's batch at any step (no shifted copies)
    # Single windows may coincide by chance (sampling with replacement), but only rarely: 8 of 64 at most.
    shared = {tuple(r) for b in rank0 for r in b} & {tuple(r) for b in rank1 for r in b}
    assert len(shared) <= 8


@pytest.fixture(scope="module")
def odd_windows_checkpoint(corpus_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debug recipe with block_size 31, which gives an odd number of val windows for tiny Shakespeare (3599) and
    the synthetic text (129), so two ranks need one padding window, which must not be scored."""
    runs = tmp_path_factory.mktemp("runs")
    cli_main(fit_args(corpus_path, runs, "--trainer.max_steps", "10", "--data.block_size", "31"))
    return runs / "debug" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("bound", [[], ["--data.val_max_chars", "527"]], ids=["whole-split", "bounded"])
def test_val_loss_on_two_devices_equals_one_device(odd_windows_checkpoint: Path, corpus_path: Path, tmp_path: Path,
                                                   bound: list[str]) -> None:
    """The whole split, and a bounded part of it (527 characters: 17 windows of 31, an odd count, so 2 ranks need a
    padding window): the same windows and the same val_loss on 1 and 2 devices."""
    base = fit_args(corpus_path, tmp_path, "--ckpt_path", str(odd_windows_checkpoint), "--data.block_size", "31",
                    "--trainer.limit_val_batches", "1.0", *bound,  # all windows (N would be N per rank)
                    subcommand="validate")
    one = cli_main(base)
    two = cli_main([*base, "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2"])
    assert two.trainer.callback_metrics["val_loss"].item() == pytest.approx(
        one.trainer.callback_metrics["val_loss"].item(), rel=1e-6)
    if bound:
        assert len(one.datamodule.val_dataloader().dataset) == 17


def test_each_rank_scores_into_its_own_metric_state(odd_windows_checkpoint: Path, corpus_path: Path,
                                                    tmp_path: Path) -> None:
    """ddp_spawn pickles the module to its processes through shared memory; Lightning then copies the parameters and
    buffers, not a torchmetrics state. Both ranks then added into one val_loss state, and two unsynchronised ``+=``
    on a busy machine could lose one batch's sum (2 full runs of 3 here: 3.8997 instead of 3.9346). Each rank must
    count only its own characters: together, every scored character of the split once."""
    cli = cli_main(fit_args(corpus_path, tmp_path, "--ckpt_path", str(odd_windows_checkpoint), "--data.block_size",
                            "31", "--trainer.limit_val_batches", "1.0", "--trainer.strategy", "ddp_spawn",
                            "--trainer.devices", "2", callback("helpers.LocalValCounts", directory=str(tmp_path)),
                            subcommand="validate"))
    counts = [int((tmp_path / f"val_count{rank}.txt").read_text()) for rank in (0, 1)]
    n_val = len(cli.datamodule.val_data)
    assert sum(counts) == n_val - 1  # every target of the split once (the padding window scores nothing)
    assert counts == [55770, 55769] if n_val == 111540 else abs(counts[0] - counts[1]) <= 31
