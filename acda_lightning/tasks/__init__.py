"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .pattern_detection import PatternDetection
from .super_resolution import SuperResolution

__all__ = ["PatternDetection", "SuperResolution"]
