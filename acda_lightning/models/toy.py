"""The toy study's single-layer detectors (paper Sec. 3.3): one 7x7 Conv or one 7x7 ACDA layer."""

from __future__ import annotations

from torch import nn

from ..nn import ACDAConv2d
from .registry import register_model


@register_model
def toy_detector(conv: str = "acda", kernel_size: int = 7, **acda_kwargs) -> nn.Module:
    """One layer mapping a 1-channel map to a 1-channel detection map of the same size.

    ``conv="conv"`` is the paper's standard-convolution baseline; ``acda_kwargs`` (num_atoms,
    generator, bases, ...) go to ``ACDAConv2d``.
    """
    if conv == "conv":
        if acda_kwargs:
            raise ValueError(f"conv='conv' takes no ACDA arguments, got {sorted(acda_kwargs)}")
        return nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2)
    if conv == "acda":
        return ACDAConv2d(1, 1, kernel_size, **acda_kwargs)
    raise ValueError(f"conv must be 'acda' or 'conv', got {conv!r}")
