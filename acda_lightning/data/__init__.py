"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them."""

from .classification import ClassificationDataModule
from .toy import ToyPatternDataModule, make_pattern_canvas

__all__ = ["ClassificationDataModule", "ToyPatternDataModule", "make_pattern_canvas"]
