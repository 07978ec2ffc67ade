"""Figure helpers every task shares: atomic PNG saving, learning curves, image grids, the bases (Fig. B)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .utils import atomic_path  # noqa: E402
from .utils.plugins import Registry  # noqa: E402

# `acda figures <name>`: a study registers the paper figures it can draw from a trained run.
FIGURES = Registry("acda_lightning.studies", "figure")


def register_figure(name: str, help: str, *arguments: tuple[str, dict]):
    """Register ``draw(out, **options)`` as ``acda figures <name>``; ``arguments`` are the
    ``(flag, argparse keyword arguments)`` pairs of its options, besides ``--out``."""

    def decorate(draw):
        draw.help, draw.arguments = help, arguments
        return FIGURES.register(name)(draw)

    return decorate

def save_figure(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def learning_curves(histories: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """One panel per logged training/validation quantity; one line per run (log scale for losses).

    Constrained layout keeps ``title`` clear of the panel titles; a quantity logged once (a single
    validation) is drawn as a marker, since a one-point line is invisible.
    """
    keys = sorted({key for history in histories.values() for row in history for key in row if "/" in key})
    if not keys:
        return
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False, layout="constrained")
    for axis, key in zip(axes[0], keys):
        for label, history in histories.items():
            points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
            if points:
                axis.plot(*zip(*points), label=label, marker="o" if len(points) == 1 else None)
        axis.set_xlabel("step")
        axis.set_title(key)
        if "loss" in key or "mse" in key:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        figure.suptitle(title)
    save_figure(figure, path)


def image_grid(panels: list[list[tuple[str, np.ndarray]]], path: Path, title: str = "") -> None:
    """Rows of (caption, 2-D map) panels, each with its own colour scale."""
    rows, cols = len(panels), max(len(row) for row in panels)
    figure, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for r, row in enumerate(panels):
        for c, (caption, image) in enumerate(row):
            axes[r][c].imshow(image, cmap="gray", interpolation="nearest")
            axes[r][c].set_title(caption, fontsize=9)
    if title:
        figure.suptitle(title)
    save_figure(figure, path)


@register_figure(
    "bases",
    "the multi-scale Fourier-Bessel bases (Fig. B)",
    ("--kernel-size", {"type": int, "default": 7}),
    ("--bases-per-scale", {"type": int, "default": 6}),
)
def bases_figure(path: Path, kernel_size: int = 7, bases_per_scale: int = 6) -> None:
    """The multi-scale Fourier-Bessel bases, one row per scale (the paper's Figure B)."""
    from .nn import multiscale_fourier_bessel_bases
    from .nn.bases import default_scales

    scales = default_scales(kernel_size)
    bases = multiscale_fourier_bessel_bases(kernel_size, bases_per_scale).numpy()
    limit = float(np.abs(bases).max())
    figure, axes = plt.subplots(len(scales), bases_per_scale, figsize=(1.6 * bases_per_scale, 1.7 * len(scales)))
    axes = np.atleast_2d(axes)
    for row, scale in enumerate(scales):
        for col in range(bases_per_scale):
            axis = axes[row][col]
            axis.imshow(bases[row * bases_per_scale + col], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                axis.set_ylabel(f"{scale}x{scale}")
    figure.suptitle(f"Fourier-Bessel bases, {len(scales)} scales x {bases_per_scale}, padded to {kernel_size}x{kernel_size}")
    save_figure(figure, Path(path))
