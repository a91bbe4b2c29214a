"""nanoGPT's unchanged recipe (../shared/anchors/nanoGPT, read there, never copied into the project) for the benches
that run it side by side with ours: a scratch copy with its data prepared, and its CPU command from ANCHOR.md."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NANOGPT = ROOT.parent / "shared" / "anchors" / "nanoGPT"
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
CPU_COMMAND = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
               "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
               "--lr_decay_iters=2000", "--dropout=0.0"]  # ANCHOR.md's CPU recipe


def available() -> bool:
    return NANOGPT.is_dir() and CORPUS.is_file()


def prepared_copy(parent: Path, corpus: Path = CORPUS) -> Path:
    """A scratch copy of nanoGPT under ``parent`` with ``corpus`` prepared by its own prepare.py (its ``requests``
    import is met by an empty stand-in: nothing is downloaded when input.txt is there)."""
    folder = Path(parent) / "nanoGPT"
    if not (folder / "data" / "shakespeare_char" / "train.bin").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(NANOGPT, folder)
        shutil.copy(corpus, folder / "data" / "shakespeare_char" / "input.txt")
        (folder / "requests.py").write_text("")
        subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=folder, check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(folder)})
    return folder
