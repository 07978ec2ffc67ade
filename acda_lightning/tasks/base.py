"""What every task module shares: building the network by registry name, and a finite-loss guard."""

from __future__ import annotations

import lightning as L
import torch

from ..models import create_model


class TaskModule(L.LightningModule):
    """A LightningModule whose network is ``create_model(net, **net_kwargs)``."""

    def __init__(self, net: str, net_kwargs: dict | None = None):
        super().__init__()
        self.net = create_model(net, **(net_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Stop at the first NaN/inf loss with the step and batch that produced it."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); lower the learning rate, enable gradient clipping, or check that batch"
            )
        return loss
