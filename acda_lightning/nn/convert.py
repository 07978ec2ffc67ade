"""Swap nn.Conv2d layers of any model for ACDAConv2d."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .acda import ACDAConv2d


def _convertible(conv: nn.Conv2d, kernel_sizes: set[int]) -> bool:
    k_h, k_w = conv.kernel_size
    return (
        type(conv) is nn.Conv2d
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and k_h == k_w
        and k_h in kernel_sizes
        and conv.stride[0] == conv.stride[1]
        and conv.dilation[0] == conv.dilation[1]
        and (conv.padding == "same" or (isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]))
    )


def to_acda(model: nn.Module, kernel_sizes: Iterable[int] = (3, 5, 7), **acda_kwargs) -> nn.Module:
    """Replace, in place, every plain ``nn.Conv2d`` (groups=1, square, zero padding) whose kernel
    size is in ``kernel_sizes`` by an ``ACDAConv2d`` with the same geometry; returns ``model``.

    ``acda_kwargs`` go to ``ACDAConv2d`` (num_atoms, bases, generator, impl, ...). The new
    layer lives on the replaced conv's device and dtype.
    """
    sizes = set(kernel_sizes)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d) and _convertible(child, sizes):
            kernel, dilation = child.kernel_size[0], child.dilation[0]
            padding = dilation * (kernel - 1) // 2 if child.padding == "same" else child.padding[0]
            layer = ACDAConv2d(
                child.in_channels,
                child.out_channels,
                kernel,
                stride=child.stride[0],
                padding=padding,
                dilation=dilation,
                bias=child.bias is not None,
                **acda_kwargs,
            )
            setattr(model, name, layer.to(device=child.weight.device, dtype=child.weight.dtype))
        else:
            to_acda(child, sizes, **acda_kwargs)
    return model
