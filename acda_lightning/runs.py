"""Run identity: where one run's logs, checkpoints and report live, and whether it was cut short.

Layout (documented in the README, "Runs, resuming and reports"):
    runs/<name>/<run_id>/            TensorBoard events, config.yaml, csv/attempt_<n>/metrics.csv
    runs/<name>/<run_id>/checkpoints/last.ckpt (+ the monitored best)
    reports/<name>/runs/<run_id>/    every run's record (metrics.json, report.md, figures)
    reports/<name>/                  the newest *complete* run's record, the one studies read
A fit is complete when it ended on its own (its budget reached or its stopping rule fired) and nothing
shortened it on purpose (see ``shortened_reasons``); a test is complete when the weights it tested come
from a complete fit of the same config (same ``config_sha256``, read from the checkpoint's ``FIT_RECORD``).
Anything else is recorded under reports/<name>/runs/ as what it is and never replaces a complete record.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch

from .utils.checkpoint import state_dict_mismatch

RUN_ID_ENV = "ACDA_RUN_ID"  # shared with the processes DDP launches, so every rank writes to one run
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_PREFIX = "best-"
FIT_RECORD = "acda_fit"  # the fit's identity and state, inside every checkpoint it writes
FINAL_WEIGHTS = "final weights (no model selection)"  # the selection protocol of a last.ckpt

# Settings that decide where a run reads and writes, or how it shows progress, but not what it trains or
# measures: the config hash leaves them out, so weights tested from another folder or machine (another
# data.root, accelerator, worker count) still count as the same config. Everything else, budgets and
# device count (the effective batch) included, is part of the experiment.
NEUTRAL_KEYS = (
    "ckpt_path", "weights_only", "verbose", "return_predictions", "test_after_fit", "predict_dir", "own_budget",
    "last_checkpoint_every_n_steps",
    "report.root", "data.init_args.root", "data.init_args.num_workers", "data.init_args.cache_dir",
    "trainer.default_root_dir", "trainer.accelerator", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.enable_checkpointing", "trainer.logger", "trainer.log_every_n_steps", "trainer.num_sanity_val_steps",
)  # fmt: skip

# Trainer settings that cut a run short when an override (command line, or a -c file that does not declare
# `own_budget: true`) lowers them below the experiment YAML's own.
BUDGET_KEYS = ("max_epochs", "max_steps", "max_time")
FRACTION_KEYS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches")


class RunError(ValueError):
    """A user-facing problem with a run (its checkpoint, its folders): one line naming the file and the fix."""


def new_run_id() -> str:
    """Sortable by start time to the millisecond (``--ckpt_path last`` resumes the newest unfinished run; two runs
    of one second sorted by their random suffix), unique across processes started in the same millisecond."""
    if os.environ.get(RUN_ID_ENV):
        return os.environ[RUN_ID_ENV]
    now = time.time()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}{int(now % 1 * 1000):03d}-{secrets.token_hex(2)}"


def experiment_config(config: dict) -> dict:
    """``config`` (a resolved config as plain data) without the ``NEUTRAL_KEYS``."""
    config = json.loads(json.dumps(config, default=str))
    for dotted in NEUTRAL_KEYS:
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config


def config_sha256(config: dict) -> str:
    """The hash that identifies an experiment: its resolved config without the ``NEUTRAL_KEYS``."""
    return hashlib.sha256(json.dumps(experiment_config(config), sort_keys=True).encode()).hexdigest()


def fit_record(path: Path) -> dict | None:
    """The ``FIT_RECORD`` of a checkpoint, read without loading its tensors (None for a foreign file)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # an unreadable file is not this run's to resume; read_checkpoint reports it if chosen
        return None
    return checkpoint.get(FIT_RECORD) if isinstance(checkpoint, dict) else None


def last_checkpoint(runs_dir: Path, run_id: str | None = None) -> tuple[Path | None, list[str]]:
    """``last.ckpt`` of run ``run_id``, or of the newest *unfinished* run under ``runs_dir``; with it, the
    ids of the newer runs that were passed over because they finished (a finished run is never resumed)."""
    if run_id:
        path = runs_dir / run_id / CHECKPOINT_DIR / LAST_CHECKPOINT
        return (path if path.is_file() else None), []
    finished = []
    for path in sorted(runs_dir.glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"), reverse=True):
        if (fit_record(path) or {}).get("finished"):
            finished.append(path.parent.parent.name)
        else:
            return path, finished
    return None, finished


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


def check_resumable(checkpoint: dict, path: Path) -> None:
    """Raise one RunError when ``checkpoint`` comes from a fit that has finished: resuming it would rewrite it."""
    record = checkpoint.get(FIT_RECORD) or {}
    if record.get("finished"):
        raise RunError(
            f"checkpoint {path} is from run {record['run_id']}, which has finished ({record['stopping']}); a "
            "finished run is never resumed or rewritten: drop --ckpt_path to start a new run of this config"
        )


def mark_finished(checkpoint_dir: Path, record: dict, selections: dict[str, str]) -> None:
    """Write the fit's final ``record`` (finished, complete, why it stopped) into every checkpoint of the run,
    with ``selections[file name]`` (which split chose those weights), each file replaced atomically."""
    from .utils import atomic_path

    for path in sorted(checkpoint_dir.glob("*.ckpt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        checkpoint[FIT_RECORD] = {**checkpoint.get(FIT_RECORD, {}), **record, "selection": selections.get(path.name)}
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def tested_weights_reasons(record: dict | None, config: dict) -> list[str]:
    """Why weights whose checkpoint holds ``record`` are not a complete fit of ``config`` (empty when they are)."""
    if record is None:
        return ["weights of unknown origin (the checkpoint holds no `acda fit` record)"]
    if not record.get("finished"):
        return [f"weights of unfinished run {record['run_id']} (epoch {record['epoch']}, step {record['step']})"]
    reasons = [f"weights of shortened run {record['run_id']} ({'; '.join(record['shortened'])})"] if record["shortened"] else []
    if record["config_sha256"] != config_sha256(config):
        fitted, tested = _flat(experiment_config(record["config"])), _flat(experiment_config(config))
        differing = sorted(key for key in fitted.keys() | tested.keys() if fitted.get(key) != tested.get(key))
        reasons.append(f"weights of run {record['run_id']}, fitted with another config (differs in {', '.join(differing[:4])})")
    return reasons


def _flat(config: dict, prefix: str = "") -> dict:
    """A nested config as ``{"a.b.c": value}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_writable(folders: dict[str, Path]) -> None:
    """Raise one RunError naming the first of ``folders`` ({what: folder}) this process cannot write into,
    by writing a probe file into it or into its nearest existing parent (the folders are created later)."""
    for what, folder in folders.items():
        existing = folder.absolute()
        while not existing.exists():
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(f"{existing} is a file")
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise RunError(
                f"{what} {folder} is not writable ({error.strerror or error}); pass a writable folder"
            ) from None


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
