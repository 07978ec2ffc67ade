"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .classification import ImageClassification
from .crowd import CrowdCounting
from .denoising import Denoising
from .pattern_detection import PatternDetection
from .super_resolution import SuperResolution

__all__ = ["CrowdCounting", "Denoising", "ImageClassification", "PatternDetection", "SuperResolution"]
