"""Run identity: where one run's logs, checkpoints and report live, and whether it was cut short.

Layout (documented in the README, "Runs, resuming and reports"):
    runs/<name>/<run_id>/            TensorBoard events, config.yaml, csv/attempt_<n>/metrics.csv
    runs/<name>/<run_id>/checkpoints/last.ckpt (+ the monitored best)
    reports/<name>/runs/<run_id>/    every run's record (metrics.json, report.md, figures)
    reports/<name>/                  the newest *complete* run's record, the one studies read
A run is complete unless it was shortened on purpose (see ``shortened_reasons``); a shortened
run's record stays under reports/<name>/runs/ and never replaces a complete one.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

import torch

from .utils.checkpoint import state_dict_mismatch

RUN_ID_ENV = "ACDA_RUN_ID"  # shared with the processes DDP launches, so every rank writes to one run
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"

# Trainer settings that cut a run short when the command line lowers them below the config's own.
BUDGET_KEYS = ("max_epochs", "max_steps", "max_time")
FRACTION_KEYS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches")


class RunError(ValueError):
    """A user-facing problem with a run (its checkpoint, its folders): one line naming the file and the fix."""


def new_run_id() -> str:
    """Sortable by start time, unique across processes started in the same second."""
    return os.environ.get(RUN_ID_ENV) or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def last_checkpoint(runs_dir: Path, run_id: str | None = None) -> Path | None:
    """``last.ckpt`` of run ``run_id``, or of the newest run under ``runs_dir`` that has one."""
    if run_id:
        path = runs_dir / run_id / CHECKPOINT_DIR / LAST_CHECKPOINT
        return path if path.is_file() else None
    candidates = sorted(runs_dir.glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"))
    return candidates[-1] if candidates else None


def run_id_of_checkpoint(path: Path, runs_dir: Path) -> str | None:
    """The run a checkpoint belongs to, when it lives at runs/<name>/<run_id>/checkpoints/."""
    path = path.resolve()
    if path.parent.name == CHECKPOINT_DIR and path.parent.parent.parent == runs_dir.resolve():
        return path.parent.parent.name
    return None


def read_checkpoint(path: Path) -> dict:
    """Load a Lightning checkpoint on the CPU, or raise one RunError saying what is wrong with the file."""
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; pass an existing .ckpt file or `--ckpt_path last`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises a zoo of types for truncated or foreign files
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise RunError(
            f"checkpoint {path} is corrupt or not a Lightning checkpoint ({detail}); delete it or pass another --ckpt_path"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RunError(f"checkpoint {path} holds no model state_dict: not a Lightning checkpoint; pass another --ckpt_path")
    return checkpoint


def check_checkpoint_fits(checkpoint: dict, path: Path, model: torch.nn.Module) -> None:
    """Raise one RunError when ``checkpoint`` was saved from a different model than the config builds."""
    missing, unexpected, mismatched = state_dict_mismatch(checkpoint["state_dict"], model.state_dict())
    if missing or unexpected or mismatched:
        examples = (missing + unexpected + mismatched)[:3]
        raise RunError(
            f"checkpoint {path} was saved from a different model than this config builds "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} mismatched tensors, e.g. "
            f"{', '.join(examples)}); pass the config it was trained with"
        )


def _seconds(max_time) -> float:
    """Lightning's max_time ("DD:HH:MM:SS", a dict of timedelta fields, or a timedelta) in seconds."""
    if isinstance(max_time, str):
        days, hours, minutes, seconds = (int(part) for part in max_time.split(":"))
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if isinstance(max_time, dict):
        return timedelta(**max_time).total_seconds()
    return max_time.total_seconds()


def _budget_lowered(key: str, value, own) -> bool:
    """Whether ``value`` caps training harder than the config's ``own`` (None and -1 mean no cap)."""
    if value in (None, -1):
        return False
    if own in (None, -1):
        return True
    return _seconds(value) < _seconds(own) if key == "max_time" else value < own


def _batches_lowered(key: str, value, own) -> bool:
    """Whether a limit_*_batches / overfit_batches value uses less data than the config's own."""
    if value == own:
        return False
    if key == "overfit_batches":
        return bool(value)
    if value is None or value == 1.0:
        return False
    if own is None or own == 1.0:
        return True
    return not (isinstance(value, float) and isinstance(own, float) and value > own)


def shortened_reasons(trainer: dict, config_trainer: dict, subcommand: str, ckpt_path: str | None) -> list[str]:
    """Why this run is not a complete run of its config; empty for a complete one.

    ``trainer`` is the resolved trainer config, ``config_trainer`` the same from the YAML files
    alone (without command-line overrides), so a config may set its own short budget.
    """
    reasons = []
    if trainer.get("fast_dev_run"):
        reasons.append(f"fast_dev_run={trainer['fast_dev_run']}")
    for key in BUDGET_KEYS:
        if _budget_lowered(key, trainer.get(key), config_trainer.get(key)):
            reasons.append(f"{key}={trainer.get(key)} (the config's own: {config_trainer.get(key)})")
    for key in FRACTION_KEYS:
        if _batches_lowered(key, trainer.get(key), config_trainer.get(key)):
            reasons.append(f"{key}={trainer.get(key)} (the config's own: {config_trainer.get(key)})")
    if subcommand in ("test", "validate") and not ckpt_path:
        reasons.append("untrained weights (no --ckpt_path)")
    return reasons
