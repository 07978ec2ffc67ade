"""What every study reads: a finished run's record and arrays under reports/<run>/."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import yaml

# The experiment configs, tasks/<task>/<config>.yaml beside the package: a study's runs are the ones they name.
CONFIGS_ROOT = Path(__file__).resolve().parents[2] / "tasks"


@functools.cache
def task_configs(task: str) -> dict[str, dict]:
    """config name -> parsed YAML of every experiment config in tasks/<task>/ (``_*.yaml`` are shared parts)."""
    folder = CONFIGS_ROOT / task
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml")) if not p.name.startswith("_")}
    if not configs:
        raise FileNotFoundError(f"no experiment configs in {folder}; a study reads its run names from them")
    return configs


def run_names(task: str) -> dict[str, str]:
    """config name -> run name (the config's ``report.name``, its folder under reports/)."""
    return {config: parsed["report"]["name"] for config, parsed in task_configs(task).items()}


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
