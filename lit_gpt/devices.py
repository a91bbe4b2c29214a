"""Where and how a run computes: the precision a device supports, the strategies that fit these models, the
cluster environment, and the per-process device settings."""

from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lit_gpt.errors import LitGPTError

try:  # private in Lightning 2.6, with no public equivalent; tests/test_private_apis.py fails if it moves
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
except ImportError:  # then ddp_spawn's processes keep Lightning's behaviour (see EndSpawnedProcessGroup)
    _MultiProcessingLauncher = None


class EndSpawnedProcessGroup(Callback):
    """Destroy the process group at the end of each process that ``ddp_spawn`` started.

    Lightning leaves it alive, and the process exits with gloo's threads still running: now and then that ends in
    ``terminate called without an active exception`` and SIGABRT, after the work is done. Nothing uses the group
    after ``teardown`` in those processes (rank 0 sends its results back through a queue).
    """

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        launcher = trainer.strategy.launcher
        spawned = _MultiProcessingLauncher is not None and isinstance(launcher, _MultiProcessingLauncher)
        if spawned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class FastCudaMatmuls(Callback):
    """TF32 for the float32 matmuls left outside autocast, on CUDA (in every process: ``ddp_spawn`` starts fresh ones)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True


def without_slurm_auto_requeue(plugins: Any) -> Optional[list[Any]]:
    """Under SLURM, the Trainer's plugins with Lightning's auto-requeue off (None elsewhere, or where the user chose a
    cluster environment). Its SIGUSR1 handler writes ``hpc_ckpt_*.ckpt`` from inside a signal handler, possibly in
    the middle of a step; SIGTERM, which SLURM sends on preemption, already stops at a step boundary with a complete
    ``last.ckpt``, and ``#SBATCH --requeue`` with ``--ckpt_path last`` resumes it."""
    given = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not SLURMEnvironment.detect() or any(isinstance(p, ClusterEnvironment) for p in given):
        return None
    rank_zero_info("SLURM: Lightning's auto-requeue (SIGUSR1) is off; SIGTERM writes last.ckpt at a step boundary, "
                   "and a requeued job resumes it with --ckpt_path last")
    return [*given, SLURMEnvironment(auto_requeue=False)]


def refuse_sharding(strategy: Any) -> None:
    """One line for a strategy that shards the model (FSDP, DeepSpeed), instead of a run whose weight decay is
    silently off: they flatten the weights into 1-D shards, so the parameter groups (matrices decay, Muon) see none."""
    name = str(getattr(strategy, "class_path", strategy)) if not isinstance(strategy, dict) \
        else str(strategy.get("class_path"))
    if any(word in name.lower() for word in ("fsdp", "deepspeed")):
        raise LitGPTError(
            f"--trainer.strategy {name} is not supported: it shards the weights, which breaks the optimizer's "
            f"parameter groups; these models (10 M parameters in the largest recipe) fit whole on any GPU, where "
            f"DDP is the right tool: --trainer.strategy ddp --trainer.devices N"
        )


def runs_on_cpu(accelerator: Optional[str]) -> bool:
    """Whether the Trainer will pick the CPU: asked for, or "auto" on a machine with neither CUDA nor MPS."""
    return accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def bf16_supported(accelerator: Optional[str]) -> bool:
    """Whether bf16 autocast runs on the device the Trainer will pick: a CPU (Lightning's CPU autocast) or a
    bf16-capable CUDA GPU; not Apple's MPS, nor a CUDA GPU without bf16."""
    if runs_on_cpu(accelerator):
        return True
    if accelerator in (None, "auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return not (accelerator in ("mps", "gpu", "cuda") or torch.backends.mps.is_available())


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 matmuls are emulated, many
    times slower than float32 (docs/benchmarks.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: say nothing
        return True
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def bf16_note(precision: Any, accelerator: Optional[str]) -> tuple[Any, Optional[str]]:
    """The precision to run and a line about it: bf16 is the user's choice wherever it runs (CPU autocast included,
    with a note where the CPU emulates it); where it cannot run, 32-true with a warning."""
    if not str(precision).startswith("bf16"):
        return precision, None
    if not bf16_supported(accelerator):
        return "32-true", f"warning: {precision} precision cannot run on this device; training in 32-true instead"
    if runs_on_cpu(accelerator) and not native_bf16():
        return precision, (f"note: {precision} on this CPU is autocast without bf16 instructions, slower than 32-true "
                           f"(docs/benchmarks.md); --trainer.precision 32-true runs faster here")
    return precision, None
