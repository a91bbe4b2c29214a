"""What every bench shares: the machine line printed first, the recipe's CLI without running it, a synchronised
clock, a free port, and nanoGPT's unchanged recipe (read from ../shared/anchors/nanoGPT, never copied in)."""

import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

ROOT = Path(__file__).resolve().parents[1]
NANOGPT = Path(os.environ.get("NANOGPT_DIR", ROOT.parent / "shared" / "anchors" / "nanoGPT"))
NANOGPT_CPU_COMMAND = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                       "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                       "--lr_decay_iters=2000", "--dropout=0.0"]  # ANCHOR.md's CPU recipe


def cpuinfo(key: str) -> str:
    """The first ``key`` line of /proc/cpuinfo ('' where there is none)."""
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")


def matmul_ratio(repeats: int = 20) -> float:
    """Time of a bf16 matmul over a float32 one at the CPU recipe's sizes ((2048, 128) @ (128, 512)): about 1 or less
    where bf16 is native, 10-90 where it is emulated."""
    a, b, threads = torch.randn(2048, 128), torch.randn(128, 512), torch.get_num_threads()
    bf16, fp32 = (Timer("x @ y", globals={"x": a.to(d), "y": b.to(d)}, num_threads=threads).timeit(repeats).median
                  for d in (torch.bfloat16, torch.float32))
    return bf16 / fp32


def machine_line() -> str:
    """The machine a figure belongs to: CPU model, vector capability, bf16 (native per the CPU flags, and the matmul
    ratio), threads, or the GPU; torch, Lightning and Python."""
    import lightning

    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        flags = cpuinfo("flags").split()
        native = "native" if {"avx512_bf16", "amx_bf16"} & set(flags) else "not native" if flags else "unknown"
        device = (f"CPU {cpuinfo('model name') or platform.processor()}, {torch.backends.cpu.get_cpu_capability()}, "
                  f"bf16 {native} (bf16/fp32 matmul time {matmul_ratio():.1f}x), {torch.get_num_threads()} threads")
    return f"machine: {device}; torch {torch.__version__}, Lightning {lightning.__version__}, Python " \
           f"{platform.python_version()}"


def clock(device: torch.device) -> float:
    """time.perf_counter() once the device has finished what was launched (a CUDA queue is drained first)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_cli(config: str, steps: int, workdir: str, extra: list[str]):
    """The recipe's LightningCLI (model, data, Trainer, callbacks) without running it: ``steps`` steps, no
    validation, logs under ``workdir``."""
    from lit_gpt.cli import GPTLightningCLI
    from lit_gpt.progress import plain_output

    args = ["--config", config, "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.logger.init_args.save_dir", workdir, *extra]
    with plain_output():  # warnings as one line, as train.py prints them
        return GPTLightningCLI(args, run=False)


def nanogpt_copy(parent: Path) -> Path:
    """A scratch copy of nanoGPT under ``parent`` with tiny Shakespeare prepared by its own prepare.py (its
    ``requests`` import is met by an empty stand-in: nothing is downloaded when input.txt is there)."""
    from lit_gpt.data import tiny_shakespeare

    folder = Path(parent) / "nanoGPT"
    if not (folder / "data" / "shakespeare_char" / "train.bin").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(NANOGPT, folder)
        shutil.copy(tiny_shakespeare(), folder / "data" / "shakespeare_char" / "input.txt")
        (folder / "requests.py").write_text("")
        subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=folder, check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(folder)})
    return folder


def nanogpt_command(*overrides: str, cpu: bool = True) -> list[str]:
    """nanoGPT's train.py with its shakespeare_char config (and ANCHOR.md's CPU command), then ``overrides``."""
    return [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py",
            *(NANOGPT_CPU_COMMAND if cpu else []), *overrides]


if __name__ == "__main__":
    print(machine_line())
