"""One LightningModule per task: each connects a network, a loss and its metrics."""

from .classification import ImageClassification
from .crowd import CrowdCounting
from .denoise import Denoising
from .toy import PatternDetection
from .sr import SuperResolution

__all__ = ["CrowdCounting", "Denoising", "ImageClassification", "PatternDetection", "SuperResolution"]
