"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them."""

from .realsr import RealSR, RealSRDataModule
from .sidd import SIDD, SIDDDataModule
from .toy import ToyPatternDataModule, make_pattern_canvas
from .transforms import augment, paired_random_crop

__all__ = [
    "RealSR",
    "RealSRDataModule",
    "SIDD",
    "SIDDDataModule",
    "ToyPatternDataModule",
    "augment",
    "make_pattern_canvas",
    "paired_random_crop",
]
