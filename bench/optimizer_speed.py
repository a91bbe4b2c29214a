"""Optimizer step costs on this machine, side by side, for a recipe's model: Muon's orthogonalization in bfloat16
(torch.optim.Muon's) against float32 (lit_gpt's default on a CPU), and AdamW foreach against fused.

    python bench/optimizer_speed.py [--config configs/shakespeare_char_cpu.yaml] [--repeats 20]

Times one step of each over the model's parameters with random gradients (median of the repeats), on the device the
recipe trains on.
"""

import argparse
import statistics
import tempfile
import time

import torch

import common
from lit_gpt.optim import Muon


def step_ms(optimizer: torch.optim.Optimizer, device: torch.device, repeats: int) -> float:
    optimizer.step()  # warm-up: state allocated
    times = []
    for _ in range(repeats):
        start = common.clock(device)
        optimizer.step()
        times.append(common.clock(device) - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shakespeare_char_cpu.yaml", help="the recipe whose model is used")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps of each (the median is reported)")
    args, overrides = parser.parse_known_args()
    print(common.machine_line())
    cli = common.build_cli(args.config, 1, tempfile.gettempdir(), overrides)
    device = cli.trainer.strategy.root_device
    model = cli.model.model.to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and ".h." in f".{n}"]
    print(f"recipe {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{len(hidden)} block matrices for Muon; device {device}; median of {args.repeats}")
    muon = {dtype: step_ms(Muon(hidden, lr=1e-3, ortho_dtype=dtype), device, args.repeats)
            for dtype in (torch.bfloat16, torch.float32)}
    print(f"Muon step, Newton-Schulz in bfloat16 (torch's): {muon[torch.bfloat16]:8.2f} ms")
    print(f"Muon step, Newton-Schulz in float32:            {muon[torch.float32]:8.2f} ms   "
          f"bf16/fp32 {muon[torch.bfloat16] / muon[torch.float32]:.1f}x")
    adamw = {name: step_ms(torch.optim.AdamW(model.parameters(), lr=1e-3, **kw), device, args.repeats)
             for name, kw in (("foreach", {"foreach": True}), ("fused", {"fused": True}))}
    print(f"AdamW step, foreach (nanoGPT's on a CPU):       {adamw['foreach']:8.2f} ms")
    print(f"AdamW step, fused (lit_gpt's):                  {adamw['fused']:8.2f} ms   "
          f"foreach/fused {adamw['foreach'] / adamw['fused']:.1f}x")


if __name__ == "__main__":
    main()
