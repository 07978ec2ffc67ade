"""Trainer callbacks: per-run reports, run state and a convergence-based stopping rule."""

from .convergence import ConvergenceStopping
from .report import ReportWriter

__all__ = ["ConvergenceStopping", "ReportWriter"]
