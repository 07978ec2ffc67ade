"""ReportWriter: every run's reports/<name>/ (metrics.json, report.md, learning curves, task figure)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ..utils import atomic_path, write_json, write_text
from .convergence import ConvergenceStopping
from .figures import learning_curves


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and torch.as_tensor(v).numel() == 1}


class ReportWriter(Callback):
    """Writes ``<root>/<name>/`` when testing ends (rank 0 only, every file atomically).

    ``metrics.json`` holds the test metrics, the per-epoch history, parameter counts, how
    training ended and the environment; ``report.md`` is the same for people;
    ``learning_curves.png`` and the task's own figure (``figure.png``) sit beside them, and
    ``predictions.npz`` keeps the arrays the figure was drawn from.
    """

    def __init__(self, name: str, root: str = "reports"):
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"report name must be a plain folder name, got {name!r}")
        self.name = name
        self.root = root
        self.history: list[dict] = []
        self._fit_started = 0.0
        self.fit_seconds = 0.0

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / self.name

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit_seconds += time.perf_counter() - self._fit_started

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(_scalars(trainer.callback_metrics, "train/"))
        row.update(_scalars(trainer.callback_metrics, "val/"))
        self.history.append(row)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = _scalars(trainer.callback_metrics, "test/")
        stopping = next((c.reason for c in trainer.callbacks if isinstance(c, ConvergenceStopping)), None)
        record = {
            "run": self.name,
            "task": type(pl_module).__name__,
            "hparams": dict(pl_module.hparams),
            "metrics": metrics,
            "parameters": {
                "total": sum(p.numel() for p in pl_module.parameters()),
                "trainable": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            },
            "training": {
                "epochs": trainer.current_epoch,
                "steps": trainer.global_step,
                "fit_seconds": round(self.fit_seconds, 2),
                "stopping": stopping,
            },
            "history": self.history,
            "environment": {
                "torch": torch.__version__,
                "lightning": L.__version__,
                "python": platform.python_version(),
                "device": str(pl_module.device),
                "machine": platform.processor() or platform.machine(),
            },
        }
        run_dir = self.run_dir
        write_json(run_dir / "metrics.json", record)
        write_text(run_dir / "report.md", self._markdown(record))
        learning_curves({self.name: self.history}, run_dir / "learning_curves.png", title=self.name)
        artifacts = getattr(pl_module, "report_artifacts", None) or {}
        if artifacts:
            with atomic_path(run_dir / "predictions.npz") as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, **artifacts)
            pl_module.report_figures(artifacts, run_dir)

    @staticmethod
    def _markdown(record: dict) -> str:
        lines = [f"# {record['run']} ({record['task']})", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(record["metrics"].items())]
        training = record["training"]
        lines += [
            "",
            f"Parameters: {record['parameters']['total']:,}. Trained {training['steps']} steps "
            f"in {training['fit_seconds']:.1f} s on {record['environment']['device']}.",
        ]
        if training["stopping"]:
            lines.append(f"Stopping: {training['stopping']}.")
        return "\n".join(lines) + "\n"
