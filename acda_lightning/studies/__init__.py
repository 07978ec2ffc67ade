"""Study reports: each paper study combines finished runs into reports/<study>/, ours beside the paper's.

One file per study in this package registers its builder with ``@register_study("<name>")``;
a builder takes the reports root and returns one summary line per study it wrote (or a line
saying which runs are missing). ``build_reports`` runs them all; nothing here names a study.
"""

from __future__ import annotations

from pathlib import Path

from ..utils import write_text
from ..utils.plugins import Registry

STUDIES = Registry("acda_lightning.studies", "study")
register_study = STUDIES.register


def build_reports(root: str | Path = "reports", only: str | None = None) -> list[str]:
    """Build every study (or only ``only``) whose runs exist; list what is missing. Never invents a number."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"reports root {root} does not exist; train a run first (e.g. `make demo`) or pass --root")
    builders = [(only, STUDIES.get(only))] if only else STUDIES.items()
    lines = []
    for _, build in builders:
        lines.extend(build(root))
    if only is None:
        write_text(root / "README.md", "\n".join(["# Reports", "", *[f"- {line}" for line in lines]]) + "\n")
    return lines
