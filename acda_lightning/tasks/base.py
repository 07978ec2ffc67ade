"""What every task module shares: the network by registry name, a finite-loss guard, the report hooks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ..models import create_model


class TaskModule(L.LightningModule):
    """A LightningModule whose network is ``create_model(net, **net_kwargs)``.

    Hooks a task may fill in (the CLI and the ReportWriter call them; no shared file names a task):
    - ``checkpoint_monitor``: ``(metric, "min" | "max")`` the best checkpoint is chosen by, or
      None to test the final weights (``last.ckpt`` is always kept for resuming).
    - ``report_artifacts``: a dict of arrays gathered during ``test`` (saved as predictions.npz).
    - ``report_figures(artifacts, run_dir)``: draw the task's PNGs into the run's report folder.
    """

    checkpoint_monitor: tuple[str, str] | None = None

    def __init__(self, net: str, net_kwargs: dict | None = None):
        super().__init__()
        self.net = create_model(net, **(net_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def report_figures(self, artifacts: dict, run_dir: Path) -> None:
        """Draw this task's figures from ``artifacts`` into ``run_dir`` (none by default)."""

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Stop at the first NaN/inf loss with the step and batch that produced it."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); lower the learning rate, enable gradient clipping, or check that batch"
            )
        return loss
