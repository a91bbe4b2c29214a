"""What every bench shares: the machine line printed first, the recipe's CLI without running it, a synchronised
clock, and nanoGPT's unchanged recipe (../shared/anchors/nanoGPT, read there, never copied into the project)."""

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
NANOGPT = Path(os.environ.get("NANOGPT_DIR", ROOT.parent / "shared" / "anchors" / "nanoGPT"))
NANOGPT_CPU_COMMAND = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                       "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                       "--lr_decay_iters=2000", "--dropout=0.0"]  # ANCHOR.md's CPU recipe


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_instructions() -> Optional[bool]:
    """Whether the CPU has bfloat16 arithmetic (AVX512_BF16 or AMX on x86); None where /proc/cpuinfo is missing."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def matmul_ratio(n: int = 2048, k: int = 128, m: int = 512, repeats: int = 20) -> float:
    """Time of a bf16 matmul over a float32 one at the CPU recipe's sizes ((2048, 128) @ (128, 512)): about 1 or less
    where bf16 is native, 10-30 where it is emulated."""
    a, b = torch.randn(n, k), torch.randn(k, m)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y
        start = time.perf_counter()
        for _ in range(repeats):
            x @ y
        times[dtype] = time.perf_counter() - start
    return times[torch.bfloat16] / times[torch.float32]


def machine_line() -> str:
    """The machine a figure belongs to: CPU model, vector capability, bf16, threads (or the GPU), torch, Lightning."""
    import lightning

    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        native = {True: "native", False: "not native", None: "unknown"}[bf16_instructions()]
        device = (f"CPU {cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, bf16 {native} (bf16/fp32 matmul "
                  f"time {matmul_ratio():.1f}x), {torch.get_num_threads()} threads")
    return f"machine: {device}; torch {torch.__version__}, Lightning {lightning.__version__}, Python " \
           f"{platform.python_version()}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device: torch.device) -> float:
    """time.perf_counter() once the device has finished what was launched (a CUDA queue is drained first)."""
    sync(device)
    return time.perf_counter()


def build_cli(config: str, steps: int, workdir: str, extra: list[str]):
    """The recipe's LightningCLI (model, data, Trainer, callbacks) without running it: ``steps`` steps, no
    validation, logs under ``workdir``."""
    from lit_gpt.cli import GPTLightningCLI
    from lit_gpt.data import CharDataModule
    from lit_gpt.module import LitGPT

    args = ["--config", config, "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.logger.init_args.save_dir", workdir, *extra]
    return GPTLightningCLI(LitGPT, CharDataModule, run=False, args=args, save_config_kwargs={"overwrite": True})


def nanogpt_available() -> bool:
    return NANOGPT.is_dir()


def corpus() -> Path:
    from lit_gpt.data import tiny_shakespeare

    return tiny_shakespeare()


def nanogpt_copy(parent: Path, text: Optional[Path] = None) -> Path:
    """A scratch copy of nanoGPT under ``parent`` with ``text`` (tiny Shakespeare by default) prepared by its own
    prepare.py (its ``requests`` import is met by an empty stand-in: nothing is downloaded when input.txt is there)."""
    folder = Path(parent) / "nanoGPT"
    if not (folder / "data" / "shakespeare_char" / "train.bin").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(NANOGPT, folder)
        shutil.copy(text or corpus(), folder / "data" / "shakespeare_char" / "input.txt")
        (folder / "requests.py").write_text("")
        subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=folder, check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(folder)})
    return folder


def nanogpt_command(*overrides: str) -> list[str]:
    """nanoGPT's train.py with its shakespeare_char config, the CPU command of ANCHOR.md, then ``overrides``."""
    return [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py", *NANOGPT_CPU_COMMAND, *overrides]


if __name__ == "__main__":
    print(machine_line())
