"""Each technique of lit_gpt/modern.py alone on a recipe with nanoGPT's parts (learned positions), and together,
against that: the final val_loss (whole validation split) and the wall time from the process start, for each of
several seeds, one run after the other. Method: docs/recipes.md.

    python bench/ablation.py [--config configs/shakespeare_char_cpu.yaml] [--seeds 1337 1338] [--only rope qk_norm]
                             [--steps 250]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import common
from time_to_quality import timed_fit

EMA = json.dumps({"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.98}})
NANOGPT_PARTS = ["--model.config.position", "learned"]  # the base every variant changes one part of
VARIANTS = {  # name: overrides of the base; few principled settings, none tuned on the validation split
    "recipe": [],
    "rope": ["--model.config.position", "rope"],
    "qk_norm": ["--model.config.qk_norm", "true"],
    "relu2": ["--model.config.activation", "relu2"],
    "zero_init": ["--model.config.zero_init", "true"],
    "untied": ["--model.config.tie_weights", "false"],
    "logit_cap": ["--model.config.logit_cap", "15"],
    "value_embed": ["--model.config.value_embed", "true"],
    "unet": ["--model.config.unet", "true"],
    "ema": [f"--trainer.callbacks+={EMA}"],
}


def run(config: str, overrides: list[str], seed: int, workdir: Path) -> dict:
    """One training run; its final val_loss, the steps it ran, and its wall time from the process start."""
    record, start = timed_fit(config, workdir, ["--seed_everything", str(seed), "--data.seed", str(seed), *overrides])
    step, _, loss = record["validations"][-1]
    return {"val_loss": loss, "step": step, "seconds": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="the recipe to vary")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338], help="a run of each variant per seed")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="these variants (and the recipe)")
    parser.add_argument("--together", nargs="*", default=None, metavar="NAME",
                        help="also a run with these variants together")
    parser.add_argument("--steps", type=int, default=None,
                        help="every run this many steps, its schedule decaying over them, validated at the end "
                             "(default: the recipe's)")
    args, extra = parser.parse_known_args()  # anything else overrides the recipe in every run
    if args.steps is not None:
        extra = [*(o for name in ("trainer.max_steps", "model.lr_decay_steps", "trainer.val_check_interval")
                   for o in (f"--{name}", str(args.steps))), *extra]
    print(common.machine_line(), flush=True)
    variants = {n: v for n, v in VARIANTS.items() if args.only is None or n == "recipe" or n in args.only}
    if args.together:
        variants["together"] = [o for name in args.together for o in VARIANTS[name]]
    results: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # seed by seed, so that a machine that slows down affects every variant alike
            for name, overrides in variants.items():
                result = run(args.config, [*NANOGPT_PARTS, *overrides, *extra], seed, Path(tmp) / f"{name}-{seed}")
                results[name].append(result)
                print(f"seed {seed} {name:10s} val_loss {result['val_loss']:.4f} at step {result['step']}, "
                      f"{result['seconds']:.1f} s", flush=True)
    base = statistics.mean(r["val_loss"] for r in results["recipe"])
    base_time = statistics.mean(r["seconds"] for r in results["recipe"])
    print(f"\n| variant | val_loss, mean (min-max), seeds {args.seeds} | vs. the recipe | wall time vs. the recipe |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        losses = [r["val_loss"] for r in runs]
        mean, seconds = statistics.mean(losses), statistics.mean(r["seconds"] for r in runs)
        print(f"| {name} | {mean:.4f} ({min(losses):.4f}-{max(losses):.4f}) | {mean - base:+.4f} | "
              f"{seconds / base_time:.2f}x |")


if __name__ == "__main__":
    main()
