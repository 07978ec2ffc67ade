"""Evaluation metrics as torchmetrics objects (reduced correctly under DDP)."""

from .counting import CountMAE, CountRMSE

__all__ = ["CountMAE", "CountRMSE"]
