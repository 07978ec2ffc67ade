"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .classification import ImageClassification
from .pattern_detection import PatternDetection

__all__ = ["ImageClassification", "PatternDetection"]
