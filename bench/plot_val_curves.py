"""Draw the validation curves of several runs in one picture (PIL only; no plotting library needed).

    python bench/plot_val_curves.py runs/lecture/ladder_* --out docs/lecture_ladder.png

Reads ``val_loss`` from each run directory's TensorBoard events and draws one coloured line per run, with a legend
holding each run's name and best ``val_loss``.
"""

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def val_curve(run: Path) -> list[tuple[int, float]]:
    """[(optimizer steps done, val_loss), ...] of a run directory."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return [(e.step + 1, e.value) for e in events.Scalars("val_loss")]


def draw(curves: dict[str, list[tuple[int, float]]], out: Path, title: str, size=(1100, 650)) -> None:
    width, height = size
    left, right, top, bottom = 70, 330, 50, 60  # margins; the legend sits on the right
    steps = [s for c in curves.values() for s, _ in c]
    losses = [v for c in curves.values() for _, v in c]
    x_max, y_min, y_max = max(steps), min(losses) - 0.05, max(losses) + 0.05
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)

    def xy(step: float, loss: float) -> tuple[float, float]:
        return (left + step / x_max * (width - left - right),
                top + (y_max - loss) / (y_max - y_min) * (height - top - bottom))

    pen.text((left, 15), title, fill="black", font=font)
    for i in range(6):  # grid and axis labels
        loss = y_min + i * (y_max - y_min) / 5
        pen.line([xy(0, loss), xy(x_max, loss)], fill="#dddddd")
        pen.text((8, xy(0, loss)[1] - 8), f"{loss:.2f}", fill="black", font=font)
        step = i * x_max / 5
        pen.text((xy(step, y_min)[0] - 15, height - bottom + 8), f"{step:.0f}", fill="black", font=font)
    pen.text((width - right - 120, height - 25), "optimizer steps", fill="black", font=font)
    pen.text((8, top - 30), "val_loss", fill="black", font=font)
    for i, (name, curve) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        pen.line([xy(s, v) for s, v in curve], fill=colour, width=3)
        y = top + 26 * i
        pen.line([(width - right + 20, y + 9), (width - right + 50, y + 9)], fill=colour, width=4)
        pen.text((width - right + 58, y), f"{name}  {min(v for _, v in curve):.3f}", fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (each with TensorBoard event files)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="validation loss (whole split), one line per run; best in the legend")
    args = parser.parse_args()
    curves = {Path(run).name: val_curve(Path(run)) for run in sorted(args.runs)}
    draw(curves, Path(args.out), args.title)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {min(v for _, v in c):.4f}" for n, c in curves.items()))


if __name__ == "__main__":
    main()
