"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .denoising import Denoising
from .pattern_detection import PatternDetection
from .super_resolution import SuperResolution

__all__ = ["Denoising", "PatternDetection", "SuperResolution"]
