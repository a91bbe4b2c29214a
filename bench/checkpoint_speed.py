"""What a checkpoint write costs: a recipe's full checkpoint (weights, AdamW state, schedule, RNG, vocabulary) written
the way training writes it (Trainer.save_checkpoint through the atomic same-directory save), beside the recipe's own
step time, measured in the same run.

    python bench/checkpoint_speed.py --config configs/shakespeare_char.yaml [--saves 5] [--steps 30] [--data.path=FILE]

Trains ``--steps`` steps of the recipe (validation off, so the AdamW state exists and the step time is measured),
then times ``--saves`` writes of ``last.ckpt`` into a temporary directory. Prints the file size, the median write time,
the median step time, and what share of training time one write every N steps, or every S seconds, costs.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common
from train_speed import StepClock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char.yaml", help="the recipe")
    parser.add_argument("--saves", type=int, default=5, help="checkpoint writes to time (the median is reported)")
    parser.add_argument("--steps", type=int, default=30, help="training steps before the writes")
    args, overrides = parser.parse_known_args()  # anything else is a recipe override, e.g. --data.path=FILE
    print(common.machine_line())
    with tempfile.TemporaryDirectory() as workdir:
        timer = StepClock(args.steps // 2, args.steps - args.steps // 2)  # the second half: past warm-up
        cli = common.build_cli(args.config, args.steps, workdir, ["--trainer.enable_progress_bar", "false",
                                                                  "--periodic_checkpoint.every_n_seconds", "null",
                                                                  *overrides])
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
        path = Path(workdir) / "timed" / "last.ckpt"
        times = []
        for _ in range(args.saves):
            start = time.perf_counter()
            cli.trainer.save_checkpoint(path)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
    write = statistics.median(times)
    step = timer.per_step()
    print(f"recipe {args.config} ({cli.trainer.precision})")
    print(f"checkpoint {size / 1e6:.1f} MB; write {write * 1e3:.1f} ms (median of {args.saves}: "
          f"{', '.join(f'{t * 1e3:.1f}' for t in times)} ms); training step {step * 1e3:.2f} ms")
    for every in (100, 250, 1000):
        print(f"  one write every {every:4d} steps: {write / (write + every * step):6.2%} of training time")
    for seconds in (10, 60, 300):
        print(f"  one write every {seconds:3d} s:     {write / (write + seconds):6.2%} of training time")


if __name__ == "__main__":
    main()
