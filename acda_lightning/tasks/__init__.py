"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .denoising import Denoising
from .pattern_detection import PatternDetection

__all__ = ["Denoising", "PatternDetection"]
