"""Data preparation at scale, our token cache against nanoGPT's prepare.py, each measurement a fresh process: time
and peak memory above the process's baseline. Method: docs/benchmarks.md.

    python bench/data_speed.py [--sizes 10 100 1000] [--nanogpt_max_mb 100]
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
from lit_gpt.data import tiny_shakespeare

PROBE = r"""
import json, resource, sys, time
rss_kb = lambda: next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
kind, path, cache = sys.argv[1:]
if kind == "ours":
    from lit_gpt.data import CharDataModule
else:
    import runpy, numpy
base, start = rss_kb(), time.perf_counter()
if kind == "ours":
    CharDataModule(path=path, cache_dir=cache, block_size=256)
else:
    runpy.run_path(path, run_name="__main__")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB, the whole process
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": (peak - base) / 1024}))
"""


def probe(kind: str, path: Path, cache: Path, cwd: Path = common.ROOT) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(path), str(cache)], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(common.ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"error: {kind} on {path} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def nanogpt_prepare(text: Path) -> dict:
    """nanoGPT's prepare.py, unchanged, beside a link to the text (its ``requests`` import met by an empty stand-in:
    it downloads nothing when input.txt is there)."""
    folder = text.with_suffix("")  # text_10mb/ beside text_10mb.txt
    folder.mkdir()
    shutil.copy(common.NANOGPT / "data" / "shakespeare_char" / "prepare.py", folder)
    (folder / "input.txt").symlink_to(text)
    (folder / "requests.py").write_text("")
    return probe("nanogpt", folder / "prepare.py", folder, cwd=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="text sizes in MB")
    parser.add_argument("--nanogpt_max_mb", type=int, default=100, help="run nanoGPT's prepare.py up to this size")
    args = parser.parse_args()
    print(common.machine_line())
    corpus = tiny_shakespeare().read_bytes()
    print(f"{'text':>7s} {'side':8s} {'first run':>10s} {'peak above base':>16s} {'later run':>10s}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes:
            text, cache = Path(tmp) / f"text_{mb}mb.txt", Path(tmp) / f"cache_{mb}mb"
            with open(text, "wb") as f:
                for start in range(0, mb * 10**6, len(corpus)):
                    f.write(corpus[: mb * 10**6 - start])
            first, later = probe("ours", text, cache), probe("ours", text, cache)
            print(f"{mb:5d}MB ours     {first['seconds']:9.2f}s {first['peak_mb']:9.0f} MB "
                  f"({first['peak_mb'] / mb:.2f}x) {later['seconds']:9.3f}s")
            nano = nanogpt_prepare(text) if common.NANOGPT.is_dir() and mb <= args.nanogpt_max_mb else None
            text.unlink()
            shutil.rmtree(cache)
            if nano is None:
                print(f"{'':7s} nanoGPT left out: {common.NANOGPT} is missing, or the text is over --nanogpt_max_mb")
                continue
            print(f"{'':7s} {'nanoGPT':8s} {nano['seconds']:9.2f}s {nano['peak_mb']:9.0f} MB; nanoGPT / ours: "
                  f"time {nano['seconds'] / first['seconds']:.1f}x, memory {nano['peak_mb'] / first['peak_mb']:.1f}x")


if __name__ == "__main__":
    main()
