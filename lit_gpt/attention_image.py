"""Attention maps as images: one heatmap per head, the prompt's characters on both axes, for TensorBoard."""

import math
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# viridis at 0, 1/4, 1/2, 3/4, 1: dark purple (no attention) to yellow (all of it)
VIRIDIS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=torch.float)
SHOWN = {"\n": "~", " ": "\u00b7", "\t": ">"}  # invisible characters on the axes (the default font is ASCII + Latin-1)


def colorize(values: torch.Tensor) -> torch.Tensor:
    """values (H, W) in [0, 1] -> (H, W, 3) uint8 viridis colours."""
    x = values.clamp(0, 1) * (len(VIRIDIS) - 1)  # (H, W) in [0, 4]
    lo = x.floor().long().clamp(max=len(VIRIDIS) - 2)  # (H, W)
    frac = (x - lo).unsqueeze(-1)  # (H, W, 1)
    return (VIRIDIS[lo] * (1 - frac) + VIRIDIS[lo + 1] * frac).round().to(torch.uint8)  # (H, W, 3)


def attention_image(att: torch.Tensor, chars: list[str], title: str, scale: int = 12,
                    columns: Optional[int] = None) -> torch.Tensor:
    """att (nh, T, T) of one layer -> (3, H, W) float image in [0, 1]: a heatmap per head, characters on the axes.

    Row t shows where position t looks (its weights over positions 0..t sum to 1), scaled to the row's maximum so
    that the strongest link of every row is yellow and no attention is dark purple; the upper triangle is empty.
    """
    nh, T, _ = att.shape
    font = ImageFont.load_default(size=max(10, scale - 1))
    cols = columns or math.ceil(math.sqrt(nh))  # a square-ish grid: 4 heads 2x2, 6 heads 3x2
    cols, rows = min(cols, nh), -(-nh // cols)
    side, label, gap, head_title = T * scale, scale + 4, 16, scale + 6
    cell_w, cell_h = label + side + gap, head_title + label + side + gap
    canvas = Image.new("RGB", (cols * cell_w + gap, rows * cell_h + 30), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 6), title, fill="black", font=font)
    shown = [SHOWN.get(c, c) for c in chars]
    for h in range(nh):
        x0 = gap + (h % cols) * cell_w + label
        y0 = 30 + (h // cols) * cell_h + head_title + label
        heat = att[h] / att[h].amax(dim=-1, keepdim=True).clamp(min=1e-9)  # (T, T), each row scaled to its max
        pixels = colorize(heat).repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # (T*scale, T*scale, 3)
        canvas.paste(Image.fromarray(pixels.numpy()), (x0, y0))
        draw.text((x0, y0 - label - head_title + 2), f"head {h}", fill="black", font=font)
        for t, ch in enumerate(shown):
            draw.text((x0 - label + 2, y0 + t * scale), ch, fill="black", font=font)  # rows: the query
            draw.text((x0 + t * scale + 2, y0 - label), ch, fill="black", font=font)  # columns: the key
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float() / 255  # (H, W, 3) uint8 -> (3, H, W)
