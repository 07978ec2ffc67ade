"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them."""

from .classification import ClassificationDataModule
from .crowd import CrowdDataModule, ShanghaiTech, UCFQNRF
from .density import gaussian_density
from .realsr import RealSR, RealSRDataModule
from .sidd import SIDD, SIDDDataModule
from .toy import ToyPatternDataModule, make_pattern_canvas
from .transforms import augment, paired_random_crop

__all__ = [
    "ClassificationDataModule",
    "CrowdDataModule",
    "RealSR",
    "RealSRDataModule",
    "SIDD",
    "SIDDDataModule",
    "ShanghaiTech",
    "ToyPatternDataModule",
    "UCFQNRF",
    "augment",
    "gaussian_density",
    "make_pattern_canvas",
    "paired_random_crop",
]
