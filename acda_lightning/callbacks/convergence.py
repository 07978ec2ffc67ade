"""Stop training when a monitored loss has converged (relative improvement below a tolerance)."""

from __future__ import annotations

import math

from lightning.pytorch import Callback, LightningModule, Trainer


class ConvergenceStopping(Callback):
    """Stop once ``monitor`` has not improved by more than ``rel_tol`` (relative to its best value)
    for ``patience`` consecutive epochs, after at least ``min_epochs``.

    Unlike EarlyStopping's absolute ``min_delta``, a relative tolerance means the same thing for a
    loss of 1e-1 and of 1e-4. ``reason`` records why training ended, for the report.
    """

    def __init__(self, monitor: str = "train/loss", rel_tol: float = 1e-3, patience: int = 5, min_epochs: int = 1):
        if not 0 <= rel_tol < 1:
            raise ValueError(f"rel_tol must be in [0, 1), got {rel_tol}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.monitor = monitor
        self.rel_tol = rel_tol
        self.patience = patience
        self.min_epochs = min_epochs
        self.best = math.inf
        self.stale_epochs = 0
        self.reason = "not started"

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(
                f"ConvergenceStopping monitors {self.monitor!r}, which the module does not log; "
                f"logged: {sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{self.monitor} is {value} at epoch {trainer.current_epoch} (step {trainer.global_step}); "
                "lower the learning rate or check the data"
            )
        if value < self.best * (1 - self.rel_tol):
            self.best, self.stale_epochs = value, 0
        else:
            self.best = min(self.best, value)
            self.stale_epochs += 1
        epochs_done = trainer.current_epoch + 1
        if self.stale_epochs >= self.patience and epochs_done >= self.min_epochs:
            trainer.should_stop = True
            self.reason = (
                f"converged after {epochs_done} epochs ({trainer.global_step} steps): {self.monitor} improved "
                f"by less than {self.rel_tol:g} (relative) for {self.patience} epochs"
            )
        else:
            self.reason = f"stopped by the step/epoch limit after {epochs_done} epochs ({trainer.global_step} steps)"

    def state_dict(self) -> dict:
        return {"best": self.best, "stale_epochs": self.stale_epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]
        self.stale_epochs = state_dict["stale_epochs"]
