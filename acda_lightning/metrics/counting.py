"""Counting metrics over whole images: MAE and the paper's "MSE" (root mean squared error), exact under DDP."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class _CountError(Metric):
    """Sums of absolute and squared count errors and the number of images, summed over processes.

    Sums (not per-rank means) reduce exactly however unevenly the images are split across ranks.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sum_abs_error", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_squared_error", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """``predicted``, ``target``: per-image counts, shape (B,)."""
        if predicted.shape != target.shape:
            raise ValueError(f"predicted counts {tuple(predicted.shape)} and true counts {tuple(target.shape)} differ in shape")
        error = predicted.detach().double() - target.double()
        self.sum_abs_error += error.abs().sum()
        self.sum_squared_error += error.square().sum()
        self.total += error.numel()


class CountMAE(_CountError):
    """Mean absolute count error over images."""

    def compute(self) -> torch.Tensor:
        return (self.sum_abs_error / self.total).float()


class CountRMSE(_CountError):
    """Root of the mean squared count error: what crowd-counting papers (and Table 3) call "MSE"."""

    def compute(self) -> torch.Tensor:
        return (self.sum_squared_error / self.total).sqrt().float()
