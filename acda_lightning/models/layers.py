"""Layers the model families share: a kxk convolution that is either ``nn.Conv2d`` or ``ACDAConv2d``."""

from __future__ import annotations

from torch import nn

from ..nn import ACDAConv2d

CONV_KINDS = ("acda", "conv")


def spatial_conv(
    conv: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = True,
    **acda_kwargs,
) -> nn.Module:
    """``nn.Conv2d`` for ``conv="conv"`` (the paper's baselines), ``ACDAConv2d`` of the same geometry for ``"acda"``.

    ``padding=None`` is "same" (k // 2); ``acda_kwargs`` (num_atoms, generator, ...) go to ACDAConv2d only.
    """
    check_conv_kind(conv, acda_kwargs)
    padding = kernel_size // 2 if padding is None else padding
    if conv == "conv":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
    return ACDAConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **acda_kwargs)


def check_conv_kind(conv: str, acda_kwargs: dict) -> None:
    """Reject an unknown ``conv`` and ACDA arguments given to a standard-convolution model."""
    if conv not in CONV_KINDS:
        raise ValueError(f"conv must be 'acda' or 'conv', got {conv!r}")
    if conv == "conv" and acda_kwargs:
        raise ValueError(f"conv='conv' takes no ACDA arguments, got {sorted(acda_kwargs)}")
