"""Several devices and nodes: gradient accumulation, per-rank dropout, multi-node DDP, torchrun, FSDP refused."""

import json
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error, read_losses
from lit_gpt.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def fit_args(corpus: Path, runs: Path, record: Path, *extra: str) -> list[str]:
    recorder = {"class_path": "helpers.BatchLossRecorder", "init_args": {"path": str(record)}}
    return ["fit", "--config", DEBUG, "--data.path", str(corpus), "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(runs), "--periodic_checkpoint.every_n_train_steps", "4",
            f"--trainer.callbacks+={json.dumps(recorder)}", *extra]


def on_devices(devices: int) -> list[str]:
    return [] if devices == 1 else ["--trainer.strategy", "ddp_spawn", "--trainer.devices", str(devices)]


@pytest.mark.parametrize("devices", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["1-device", "2-devices"])
@pytest.mark.parametrize("accumulate", [2, 3])
def test_resume_is_exact_with_gradient_accumulation(corpus_path: Path, tmp_path: Path, accumulate: int,
                                                    devices: int) -> None:
    """12 optimizer steps of K batches straight == 7 steps, then resumed to 12: every batch's loss on every rank,
    the validations (every 5 steps), and the dropout stream before every batch, bit for bit. Dropout is on (0.1)."""
    k = str(accumulate)
    common = ["--trainer.accumulate_grad_batches", k, "--trainer.val_check_interval", str(5 * accumulate),
              *on_devices(devices)]
    straight, legs = tmp_path / "straight.txt", tmp_path / "legs.txt"
    cli_main(fit_args(corpus_path, tmp_path / "a", straight, *common, "--trainer.max_steps", "12"))
    cli_main(fit_args(corpus_path, tmp_path / "b", legs, *common, "--trainer.max_steps", "7"))
    cli_main(fit_args(corpus_path, tmp_path / "b", legs, *common, "--trainer.max_steps", "12", "--ckpt_path", "last"))
    a, b = read_losses(straight), read_losses(legs)
    for rank in range(devices):
        assert sorted(n for kind, n in a if kind == f"batch{rank}") == list(range(12 * accumulate))
    assert sorted(step for kind, step in a if kind == "val") == [5, 10]
    assert a == b
    if devices == 2:  # every rank draws its own dropout masks: the generators differ before every batch
        assert all(a[("rng0", n)] != a[("rng1", n)] for n in range(12 * accumulate))


def test_a_validation_inside_an_accumulation_is_refused(corpus_path: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """val_check_interval counts batches: 5 with K = 2 would validate (and checkpoint) between two batches of a step."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(fit_args(corpus_path, tmp_path, tmp_path / "r.txt", "--trainer.accumulate_grad_batches", "2",
                          "--trainer.val_check_interval", "5"))
    assert_one_line_error(capsys, exit_info, r"val_check_interval .* not a multiple of .*accumulate_grad_batches 2.* "
                                             r"use 10")
    assert not (tmp_path / "debug").exists()
