"""Basis-first ACDA: a fixed depthwise conv with the K bases, a per-pixel contraction with alpha, then A.

Never materialises the (C, k*k) unfolded patches nor the per-pixel atoms: the only
intermediate is the (C, K) basis response, K = 18 for a 7x7 layer instead of 49.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def acda_basis(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size, groups=1):
    batch = x.shape[0]
    # from A's (static) shape, not x's: traced for ONNX, the basis filter then has a constant shape
    channels = coefficients.shape[1] * groups
    num_atoms, num_bases = alpha.shape[1:3]
    out_h, out_w = alpha.shape[-2:]
    if bases is None:  # atoms predicted directly: the "bases" are the k*k one-hot filters
        bases = torch.eye(num_bases, device=x.device, dtype=x.dtype)
    filters = bases.reshape(num_bases, 1, kernel_size, kernel_size).repeat(channels, 1, 1, 1)
    responses = F.conv2d(x, filters.to(x.dtype), None, stride, padding, dilation, groups=channels)
    responses = responses.reshape(batch, channels, num_bases, out_h * out_w)
    atom_out = torch.einsum("bmkp,bckp->bcmp", alpha.flatten(-2), responses)
    atom_out = atom_out.reshape(batch, channels * num_atoms, out_h, out_w)
    weight = coefficients.reshape(coefficients.shape[0], -1, 1, 1)
    # atom_out's channels are c*m + a, so group g's C/g input channels are one contiguous block of
    # (C/g)*m channels: A applies as a grouped 1x1 conv. The einsum leaves atom_out channels-last and
    # conv2d keeps that layout; the output takes the input's layout instead, since channels-last weight
    # gradients in the layers after this one are rejected by DDP's buckets (laid out like the weights).
    return F.conv2d(atom_out, weight, bias, groups=groups).contiguous(memory_format=memory_format_of(x))


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels_last 4-D input, else the default layout."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format
