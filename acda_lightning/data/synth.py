"""`acda data synth <task> --out DIR`: small synthetic datasets so every task runs without downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic_path
from .toy import make_pattern_canvas


def _synth_toy(out: Path, seed: int) -> list[Path]:
    """The toy study's canvas as toy.npz (canvas, target) plus a PNG to look at."""
    from ..callbacks.figures import image_grid

    canvas, target = make_pattern_canvas(seed)
    arrays = out / "toy.npz"
    with atomic_path(arrays) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, canvas=canvas, target=target)
    picture = out / "toy.png"
    image_grid([[("canvas", canvas), ("centre map", target)]], picture)
    return [arrays, picture]


SYNTHESIZERS = {"toy": _synth_toy}


def synthesize(task: str, out: str | Path, seed: int = 0) -> list[Path]:
    if task not in SYNTHESIZERS:
        raise ValueError(f"no synthetic data for task {task!r}; available: {sorted(SYNTHESIZERS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return SYNTHESIZERS[task](out, seed)
