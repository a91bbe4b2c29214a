"""Data preparation at scale: our token cache vs. nanoGPT's prepare.py, side by side in one run.

    python bench/data_speed.py [--sizes 10 100 1000] [--nanogpt_max_mb 100] [--workdir DIR]

For each size (MB) a text is made by repeating tiny Shakespeare (shipped with the package) and
each measurement runs in a fresh process:
  - ours, first run: ``CharDataModule(path)`` with an empty token cache (read, tokenize, write the cache, map it);
  - ours, later run: the same with the cache in place (hash the text, map the cache);
  - nanoGPT, first run: its unchanged ``data/shakespeare_char/prepare.py`` (Python lists to a ``np.uint16`` file),
    read from ../shared/anchors/nanoGPT (left out where that folder is missing, and above ``--nanogpt_max_mb``);
  - nanoGPT, later run: ``np.memmap`` of its ``train.bin`` and ``val.bin``, as its train.py does.
Each process reports its wall time for the work, its peak memory above its own baseline (the resident set after
imports), and for later runs the private (anonymous) memory the data added: the mapped ids are file pages that every
process of a node shares, not private memory. Ratios are nanoGPT / ours (above 1: ours is faster or smaller).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common

ROOT = common.ROOT
NANOGPT_PREPARE = common.NANOGPT / "data" / "shakespeare_char" / "prepare.py"

# Run in a child process: prints one JSON line with seconds, peak MB above baseline, private MB.
PROBE = r"""
import json, resource, sys, time
def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
kind, path, cache = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "ours":
    from lit_gpt.data import CharDataModule
elif kind == "nanogpt-first":
    import runpy, numpy
else:
    import numpy as np
base, base_anon = rss_kb("VmRSS"), rss_kb("RssAnon")
start = time.perf_counter()
if kind == "ours":
    data = CharDataModule(path=path, cache_dir=cache, block_size=256)
    tokens = len(data.train_data) + len(data.val_data)
elif kind == "nanogpt-first":
    runpy.run_path(path, run_name="__main__")
    tokens = None
else:
    import os
    train = np.memmap(os.path.join(path, "train.bin"), dtype=np.uint16, mode="r")
    val = np.memmap(os.path.join(path, "val.bin"), dtype=np.uint16, mode="r")
    tokens = len(train) + len(val)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB, the whole process
print(json.dumps({"seconds": seconds, "peak_mb": (peak - base) / 1024, "private_mb": (rss_kb("RssAnon") - base_anon) / 1024,
                  "tokens": tokens}))
"""


def make_text(path: Path, size: int) -> None:
    base = common.corpus().read_bytes()  # tiny Shakespeare, shipped with the package
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = base[: size - written]
            f.write(chunk)
            written += len(chunk)


def probe(kind: str, path: Path, cache: Path, cwd: Path = ROOT) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(path), str(cache)], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{kind} on {path} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def nanogpt_first(text: Path, workdir: Path) -> tuple[dict, Path]:
    """nanoGPT's prepare.py, unchanged, in a scratch folder beside a link to the text (its ``requests`` import is
    satisfied by an empty stand-in: it downloads nothing when input.txt is there)."""
    folder = workdir / "nanogpt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(NANOGPT_PREPARE, folder / "prepare.py")
    (folder / "input.txt").symlink_to(text)
    (folder / "requests.py").write_text("")
    return probe("nanogpt-first", folder / "prepare.py", folder, cwd=folder), folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="text sizes in MB")
    parser.add_argument("--nanogpt_max_mb", type=int, default=100, help="run nanoGPT's prepare.py up to this size")
    parser.add_argument("--workdir", default=None, help="where the texts and caches go (default: a temporary folder)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="data_speed_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(common.machine_line())
    print(f"texts: tiny Shakespeare repeated; workdir {workdir}")
    print(f"{'size':>7s} {'side':8s} {'first run':>10s} {'peak above base':>16s} {'later run':>10s} "
          f"{'private':>9s}")
    for mb in args.sizes:
        text = workdir / f"text_{mb}mb.txt"
        if not text.is_file() or text.stat().st_size != mb * 10**6:
            make_text(text, mb * 10**6)
        cache = workdir / f"cache_{mb}mb"
        shutil.rmtree(cache, ignore_errors=True)
        ours_first, ours_later = probe("ours", text, cache), probe("ours", text, cache)
        rows = [("ours", ours_first, ours_later)]
        if NANOGPT_PREPARE.is_file() and mb <= args.nanogpt_max_mb:
            first, folder = nanogpt_first(text, workdir)
            rows.append(("nanoGPT", first, probe("nanogpt-later", folder, folder)))
        for side, first, later in rows:
            print(f"{mb:5d}MB {side:8s} {first['seconds']:9.2f}s {first['peak_mb']:12.0f} MB "
                  f"({first['peak_mb'] / mb:4.2f}x) {later['seconds']:9.3f}s {max(0.0, later['private_mb']):6.0f} MB")
        if len(rows) == 2:
            (_, of, ol), (_, nf, nl) = rows
            print(f"{'':7s} {'ratio':8s} {nf['seconds'] / of['seconds']:9.2f}x {nf['peak_mb'] / of['peak_mb']:12.2f}x"
                  f"   (nanoGPT / ours; its later runs map its .bin files without checking that the text is unchanged)")
        elif not NANOGPT_PREPARE.is_file():
            print(f"{'':7s} nanoGPT left out: {NANOGPT_PREPARE} is missing")
        else:
            print(f"{'':7s} nanoGPT left out above --nanogpt_max_mb {args.nanogpt_max_mb}")
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
