"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them."""

from .classification import ClassificationDataModule
from .crowd import CrowdDataModule, ShanghaiTech, UCFQNRF
from .density import gaussian_density
from .toy import ToyPatternDataModule, make_pattern_canvas

__all__ = [
    "ClassificationDataModule",
    "CrowdDataModule",
    "ShanghaiTech",
    "ToyPatternDataModule",
    "UCFQNRF",
    "gaussian_density",
    "make_pattern_canvas",
]
