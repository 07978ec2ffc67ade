"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them."""

from .toy import ToyPatternDataModule, make_pattern_canvas

__all__ = ["ToyPatternDataModule", "make_pattern_canvas"]
