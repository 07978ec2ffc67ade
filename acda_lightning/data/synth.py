"""`acda data synth <task> --out DIR`: small synthetic datasets so every task runs without downloads.

Each data module registers its own writer with ``@register_synth("<task>")``; a writer takes
``(out: Path, seed: int)`` and returns the paths it wrote, in the dataset's official layout.
"""

from __future__ import annotations

from pathlib import Path

from ..utils.plugins import Registry

SYNTHESIZERS = Registry("acda_lightning.data", "synthetic dataset")
register_synth = SYNTHESIZERS.register


def synthesize(task: str, out: str | Path, seed: int = 0) -> list[Path]:
    writer = SYNTHESIZERS.get(task)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return writer(out, seed)
