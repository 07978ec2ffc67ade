"""`acda data synth <task> --out DIR`: small synthetic datasets so every task runs without downloads.

Each data module registers its own writer with ``@register_synth("<name>", "<config folder>")``;
a writer takes ``(out: Path, seed: int)`` and returns the paths it wrote. It writes every dataset
that the configs in ``tasks/<config folder>/`` read, each in its official layout under the folder
those configs name below ``data/`` (e.g. ``OUT/ShanghaiTech/part_A_final/...`` for
``root: data/ShanghaiTech``), so ``--data.root`` or ``DATA_DIR=OUT`` points a run at it.
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
