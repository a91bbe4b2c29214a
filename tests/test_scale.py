"""Several devices and nodes: gradient accumulation, per-rank dropout, multi-node DDP, torchrun, FSDP refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, assert_one_line_error, callback, fit_args, free_port, read_losses, start_process
from lit_gpt.checkpointing import checkpoint_step
from lit_gpt.cli import cli_main

def recorded_args(corpus: Path, runs: Path, record: Path, *extra: str) -> list[str]:
    """The debug recipe, last.ckpt every 4 steps, every rank's batch losses recorded in ``record``."""
    return fit_args(corpus, runs, "--periodic_checkpoint.every_n_train_steps", "4",
                    callback("helpers.BatchLossRecorder", path=str(record)), *extra)


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
    cli_main(recorded_args(corpus_path, tmp_path / "a", straight, *common, "--trainer.max_steps", "12"))
    cli_main(recorded_args(corpus_path, tmp_path / "b", legs, *common, "--trainer.max_steps", "7"))
    cli_main(recorded_args(corpus_path, tmp_path / "b", legs, *common, "--trainer.max_steps", "12",
                           "--ckpt_path", "last"))
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
        cli_main(recorded_args(corpus_path, tmp_path, tmp_path / "r.txt", "--trainer.accumulate_grad_batches", "2",
                          "--trainer.val_check_interval", "5"))
    assert_one_line_error(capsys, exit_info, r"val_check_interval .* not a multiple of .*accumulate_grad_batches 2.* "
                                             r"use 10")
    assert not (tmp_path / "debug").exists()


@pytest.mark.parametrize("strategy", ["fsdp", '{"class_path": "lightning.pytorch.strategies.FSDPStrategy"}',
                                      "deepspeed"])
def test_sharding_strategies_are_refused_with_one_line(corpus_path: Path, tmp_path: Path, strategy: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    """FSDP would put every matrix into the no-decay group (its shards are 1-D) and cannot run Muon; on a CPU
    Lightning itself fails with a traceback. One line instead, pointing at DDP, before anything is written."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(recorded_args(corpus_path, tmp_path, tmp_path / "r.txt", "--trainer.strategy", strategy))
    assert_one_line_error(capsys, exit_info, r"strategy .* is not supported: it shards the weights.* ddp")
    assert not (tmp_path / "debug").exists()


@pytest.mark.parametrize("poison", [False, True], ids=["finite", "one-nan-batch"])
def test_a_non_finite_validation_loss_is_reported_not_averaged_away(corpus_path: Path, tmp_path: Path,
                                                                   poison: bool) -> None:
    """One of four validation batches scores NaN: val_loss is NaN (torchmetrics' default would drop those losses
    and report the mean of the other three)."""
    callbacks = ["--trainer.callbacks+=helpers.PoisonOneValidationBatch"] if poison else []
    cli = cli_main(fit_args(corpus_path, tmp_path, *callbacks, subcommand="validate"))
    val_loss = cli.trainer.callback_metrics["val_loss"]
    assert torch.isnan(val_loss) if poison else torch.isfinite(val_loss)


def launch(cmd: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """A training process as a user starts it, from its own working directory (its runs/ and its log there)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return start_process(cmd, cwd / "log", cwd, **env)


def finish(procs: list[subprocess.Popen], dirs: list[Path]) -> None:
    """Wait for every process (killing all on a timeout); each must exit 0."""
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for code, d in zip(codes, dirs):
        assert code == 0, (d / "log").read_text()[-3000:]


def train_cmd(corpus: Path, *extra: str) -> list[str]:
    """train.py in a process of its own, its run in ./runs, every rank's batch losses in ./losses.txt."""
    return [sys.executable, str(ROOT / "train.py"),
            *fit_args(corpus, Path("runs"), callback("helpers.BatchLossRecorder", path="losses.txt"), *extra)]


def all_losses(*dirs: Path) -> dict[tuple[str, int], float]:
    """Every rank's batch losses and the val losses, from the losses.txt of each directory, as floats."""
    out = {}
    for d in dirs:
        out.update({k: float.fromhex(v) for k, v in read_losses(d / "losses.txt").items() if not k[0].startswith("rng")})
    return out


@pytest.fixture(scope="module")
def one_node_two_devices(corpus_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: 20 steps on one node with two processes (ddp), as `python train.py fit ... --trainer.devices 2`."""
    run = tmp_path_factory.mktemp("one_node")
    proc = launch(train_cmd(corpus_path, "--trainer.strategy", "ddp", "--trainer.devices", "2"), run,
                  MASTER_PORT=str(free_port()))
    finish([proc], [run])
    return all_losses(run)


def assert_same_run(losses: dict, reference: dict) -> None:
    assert sorted(losses) == sorted(reference)
    assert len([k for k in reference if k[0] in ("batch0", "batch1")]) == 40 and ("val", 20) in reference
    for key, value in reference.items():  # to float rounding: the gradient allreduce may add in another order
        assert losses[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_two_nodes_on_loopback_equal_one_node_with_two_devices(corpus_path: Path, tmp_path: Path,
                                                                 one_node_two_devices: dict) -> None:
    """Two launches as node 0 and node 1 (`--trainer.num_nodes 2 --trainer.devices 1`), each in its own directory
    as nodes without a shared disk are: both exit 0, node 0 holds the run's checkpoints and logs, and every loss
    equals the one-node, two-device run's."""
    port, nodes = str(free_port()), [tmp_path / "node0", tmp_path / "node1"]
    cmd = train_cmd(corpus_path, "--trainer.strategy", "ddp", "--trainer.num_nodes", "2", "--trainer.devices", "1")
    procs = [launch(cmd, node, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank))
             for rank, node in enumerate(nodes)]
    finish(procs, nodes)
    assert_same_run(all_losses(*nodes), one_node_two_devices)
    checkpoints = nodes[0] / "runs" / "debug" / "checkpoints"
    assert checkpoint_step(checkpoints / "last.ckpt") == 20
    assert len(list(checkpoints.glob("best-*.ckpt"))) == 1
    assert not list(nodes[1].rglob("*.ckpt"))  # global rank 0 writes every checkpoint


@pytest.mark.slow
def test_torchrun_equals_the_lightning_launcher(corpus_path: Path, tmp_path: Path, one_node_two_devices: dict) -> None:
    """`torchrun --nproc_per_node 2 train.py fit ... --trainer.devices 2`: the same run as Lightning's own launcher."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]
    cmd = train_cmd(corpus_path, "--trainer.strategy", "ddp", "--trainer.devices", "2")
    finish([launch([*torchrun, *cmd[1:]], tmp_path)], [tmp_path])
    assert_same_run(all_losses(tmp_path), one_node_two_devices)
    assert checkpoint_step(tmp_path / "runs" / "debug" / "checkpoints" / "last.ckpt") == 20


SLURM_JOB = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "lit_gpt", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS_PER_NODE": "1"}


@pytest.mark.parametrize("under_slurm", [False, True], ids=["no-slurm", "slurm"])
def test_slurm_auto_requeue_is_off_and_said(corpus_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture, under_slurm: bool) -> None:
    """Under SLURM (its environment variables, as srun sets them), Lightning would handle SIGUSR1 by writing
    hpc_ckpt_*.ckpt from inside the handler, mid-step. No SIGUSR1 handler is installed and one line says so."""
    if under_slurm:
        for name, value in SLURM_JOB.items():
            monkeypatch.setenv(name, value)
    record = tmp_path / "handlers.json"
    with caplog.at_level("INFO"):
        cli_main(recorded_args(corpus_path, tmp_path, tmp_path / "r.txt", "--trainer.max_steps", "2",
                               callback("helpers.SignalHandlersAtTrainStart", path=str(record))))
    assert json.loads(record.read_text())["SIGUSR1_default"]
    assert ("auto-requeue (SIGUSR1) is off" in caplog.text) == under_slurm
    assert not list(tmp_path.rglob("hpc_ckpt_*.ckpt"))


def test_a_requeued_command_with_ckpt_path_last_starts_fresh_then_resumes(corpus_path: Path, tmp_path: Path) -> None:
    """The command a batch script runs on every (re)start: `--ckpt_path last`. With nothing to resume it trains from
    step 0; run again after a stop, it resumes; the losses equal one uninterrupted run's."""
    straight, legs = tmp_path / "straight.txt", tmp_path / "legs.txt"
    cli_main(recorded_args(corpus_path, tmp_path / "a", straight, "--trainer.max_steps", "12"))
    requeued = recorded_args(corpus_path, tmp_path / "b", legs, "--ckpt_path", "last")
    cli_main([*requeued, "--trainer.max_steps", "7"])  # the first start; "preempted" after step 7
    assert sorted(n for kind, n in read_losses(legs) if kind == "batch0") == list(range(7))
    cli_main([*requeued, "--trainer.max_steps", "12"])  # the same command again
    assert read_losses(straight) == read_losses(legs)


def test_a_cluster_environment_the_user_gives_is_left_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from lit_gpt.devices import without_slurm_auto_requeue

    for name, value in SLURM_JOB.items():
        monkeypatch.setenv(name, value)
    chosen = SLURMEnvironment(auto_requeue=True)
    assert without_slurm_auto_requeue([chosen]) is None and without_slurm_auto_requeue(LightningEnvironment()) is None
    (added,) = without_slurm_auto_requeue(None)
    assert isinstance(added, SLURMEnvironment) and not added.auto_requeue
    monkeypatch.delenv("SLURM_NTASKS")
    assert without_slurm_auto_requeue(None) is None  # not under SLURM: nothing changes
