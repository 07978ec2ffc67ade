"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them."""

from .sidd import SIDD, SIDDDataModule
from .toy import ToyPatternDataModule, make_pattern_canvas

__all__ = ["SIDD", "SIDDDataModule", "ToyPatternDataModule", "make_pattern_canvas"]
