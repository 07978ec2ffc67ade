"""What every study reads: a finished run's record and arrays under reports/<run>/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def load_run(root: Path, run: str) -> dict | None:
    """The record (metrics.json) of run ``run``, or None when it has not finished yet."""
    path = root / run / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it and re-run that experiment") from error


def load_predictions(root: Path, run: str) -> dict:
    """The arrays a run's figure was drawn from (reports/<run>/predictions.npz)."""
    with np.load(root / run / "predictions.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


def missing_runs(root: Path, study: str, runs: list[str], command: str, config: str | None = None) -> str:
    """The line a study prints when runs are missing: which, how to make them (``command``, and the
    ``acda fit -c`` ``config`` pattern behind it if given), and whether only shortened runs (never
    used by a study) exist for them."""
    shortened = [run for run in runs if any((root / run / "runs").glob("*/metrics.json"))]
    note = f"; only shortened runs exist for {shortened} (studies use complete runs only)" if shortened else ""
    behind = f" (acda fit -c {config})" if config else ""
    return f"{study}: missing runs {runs}; run `{command}`{behind}{note}"
