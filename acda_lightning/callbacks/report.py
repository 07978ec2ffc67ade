"""ReportWriter: the record of one run (metrics.json, report.md, learning curves, the task's figures).

Every run writes ``<root>/<name>/runs/<run_id>/``; a complete run (not shortened on purpose, see
``acda_lightning.runs``) also becomes ``<root>/<name>/``, the record studies read.
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchmetrics
import torchvision
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, Timer

from ..runs import FINAL_WEIGHTS, config_sha256
from ..utils import atomic_path, write_json, write_text
from .convergence import ConvergenceStopping
from ..plots import learning_curves


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and torch.as_tensor(v).numel() == 1}


def stopping_reason(trainer: Trainer) -> str:
    """Why training ended, in words, for the report."""
    for callback in trainer.callbacks:
        if isinstance(callback, ConvergenceStopping) and callback.reason != "not started":
            return callback.reason
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch:
            return f"early stopping on {callback.monitor} at epoch {callback.stopped_epoch}"
        remaining = callback.time_remaining() if isinstance(callback, Timer) else None
        if remaining is not None and remaining <= 0:
            return f"max_time reached after {trainer.global_step} steps"
    if trainer.fast_dev_run:
        return "fast_dev_run (one batch)"
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"max_steps={trainer.max_steps} reached"
    return f"max_epochs={trainer.max_epochs} reached after {trainer.global_step} steps"


def _optimizer(trainer: Trainer) -> dict | None:
    """The optimizer that trained the weights and its first parameter group's settings (None when not trained here)."""
    if not trainer.optimizers:
        return None
    optimizer = trainer.optimizers[0]
    settings = {k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, bool)) and not isinstance(v, bool)}
    return {"name": type(optimizer).__name__, **settings}


class ReportWriter(Callback):
    """Writes the run's record when testing ends (rank 0 only, every file atomically).

    ``metrics.json`` holds the test metrics, the per-epoch history, parameter counts, what ran
    (resolved config and its hash, seed, devices, strategy, package versions), how long and why
    training ended, and whether the run was complete; ``report.md`` is the same for people;
    ``learning_curves.png`` and the task's own figures sit beside them, ``predictions.npz`` keeps
    the arrays the figures were drawn from. The history and wall time survive a resume.
    """

    def __init__(self, name: str, root: str = "reports"):
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"report name must be a plain folder name, got {name!r}")
        self.name = name
        self.root = root
        self.history: list[dict] = []
        self.fit_seconds = 0.0
        self._fit_started = 0.0
        self.run: dict = {"run_id": time.strftime("%Y%m%d-%H%M%S"), "shortened": [], "config": {}}

    def bind_run(self, run_id: str, shortened: list[str], config: dict, tested: str, trained: dict | None = None) -> None:
        """What the CLI knows about this run: its id, why it is shortened (if so), its resolved config,
        which weights are tested, and (for a test of a checkpoint) how long those weights were trained."""
        self.run = {"run_id": run_id, "shortened": shortened, "config": config, "tested": tested, "trained": trained}

    @property
    def complete(self) -> bool:
        return not self.run["shortened"]

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / self.name / "runs" / self.run["run_id"]

    @property
    def report_dir(self) -> Path:
        """Where this run's record ends up for people and studies: the top level if complete."""
        return Path(self.root) / self.name if self.complete else self.run_dir

    def _elapsed(self) -> float:
        """Training wall time so far, the running fit included (checkpoints are saved mid-fit)."""
        running = time.perf_counter() - self._fit_started if self._fit_started else 0.0
        return self.fit_seconds + running

    def state_dict(self) -> dict:
        return {"history": self.history, "fit_seconds": self._elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        # Testing the best checkpoint right after fit restores callbacks too; that checkpoint's
        # history and time stop at its epoch, so the ones this process has measured win.
        if self.history:
            return
        self.history = list(state_dict["history"])
        self.fit_seconds = float(state_dict["fit_seconds"])

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit_seconds, self._fit_started = self._elapsed(), 0.0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(_scalars(trainer.callback_metrics, "train/"))
        row.update(_scalars(trainer.callback_metrics, "val/"))
        self.history.append(row)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = self._record(trainer, pl_module)
        run_dir = self.run_dir
        write_json(run_dir / "metrics.json", record)
        write_text(run_dir / "report.md", self._markdown(record))
        learning_curves({self.name: self.history}, run_dir / "learning_curves.png", title=self.name)
        artifacts = getattr(pl_module, "report_artifacts", None) or {}
        if artifacts:
            with atomic_path(run_dir / "predictions.npz") as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, **artifacts)
            pl_module.report_figures(artifacts, run_dir)
        if self.complete:
            self._promote(run_dir, Path(self.root) / self.name)

    @staticmethod
    def _promote(run_dir: Path, top: Path) -> None:
        """Copy a complete run's files to reports/<name>/ (each atomically), the record studies read."""
        for path in sorted(run_dir.iterdir()):
            if path.is_file():
                with atomic_path(top / path.name) as tmp:
                    shutil.copyfile(path, tmp)

    def _record(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        config = self.run["config"]
        fitted = bool(self.history) or self.fit_seconds > 0
        training = {
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "fit_seconds": round(self.fit_seconds, 2),
            "stopping": stopping_reason(trainer) if fitted else "not trained in this run",
            "tested": self.run.get("tested", "final weights"),
            "selection": self.run.get("selection", FINAL_WEIGHTS),
            "optimizer": _optimizer(trainer),
        }
        training.update(self.run.get("trained") or {})  # a tested checkpoint's own epochs, steps, stopping, selection
        return {
            "run": self.name,
            "run_id": self.run["run_id"],
            "task": type(pl_module).__name__,
            "complete": self.complete,
            "shortened": self.run["shortened"],
            "hparams": dict(pl_module.hparams),
            "metrics": _scalars(trainer.callback_metrics, "test/"),
            "parameters": {
                "total": sum(p.numel() for p in pl_module.parameters()),
                "trainable": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            },
            "training": training,
            "history": self.history,
            "config": config,
            "config_sha256": config_sha256(config),
            "environment": {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "lightning": L.__version__,
                "torchmetrics": torchmetrics.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "device": str(pl_module.device),
                "devices": trainer.num_devices,
                "num_nodes": trainer.num_nodes,
                "strategy": type(trainer.strategy).__name__,
                "precision": str(trainer.precision),
                "seed": config.get("seed_everything"),
                "machine": platform.processor() or platform.machine(),
                "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        }

    @staticmethod
    def _markdown(record: dict) -> str:
        lines = [f"# {record['run']} ({record['task']}), run {record['run_id']}", ""]
        if record["shortened"]:
            lines += [f"**Shortened run** ({'; '.join(record['shortened'])}): not a result of the config.", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(record["metrics"].items())]
        training, environment = record["training"], record["environment"]
        lines += [
            "",
            f"Parameters: {record['parameters']['total']:,}. Trained {training['steps']} steps "
            f"({training['epochs']} epochs) in {training['fit_seconds']:.1f} s on {environment['devices']} x "
            f"{environment['device']} ({environment['strategy']}, precision {environment['precision']}), "
            f"seed {environment['seed']}.",
            f"Stopping: {training['stopping']}. Tested: {training['tested']}, selected by: {training['selection']}.",
            f"Config sha256 {record['config_sha256'][:12]}; torch {environment['torch']}, "
            f"lightning {environment['lightning']}.",
        ]
        return "\n".join(lines) + "\n"
