"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .classification import ImageClassification
from .crowd import CrowdCounting
from .pattern_detection import PatternDetection

__all__ = ["CrowdCounting", "ImageClassification", "PatternDetection"]
