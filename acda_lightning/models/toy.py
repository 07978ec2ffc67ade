"""The toy study's single-layer detectors (paper Sec. 3.3): one 7x7 Conv or one 7x7 ACDA layer."""

from __future__ import annotations

from torch import nn

from .layers import spatial_conv
from .registry import register_model


@register_model
def toy_detector(conv: str = "acda", kernel_size: int = 7, **acda_kwargs) -> nn.Module:
    """One layer mapping a 1-channel map to a 1-channel detection map of the same size.

    ``conv="conv"`` is the paper's standard-convolution baseline; ``acda_kwargs`` (num_atoms,
    generator, bases, ...) go to ``ACDAConv2d``.
    """
    return spatial_conv(conv, 1, 1, kernel_size, **acda_kwargs)
