"""Basis-first ACDA: a fixed depthwise conv with the K bases, a per-pixel contraction with alpha, then A.

Never materialises the (C, k*k) unfolded patches nor the per-pixel atoms: the only
intermediate is the (C, K) basis response, K = 18 for a 7x7 layer instead of 49.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def acda_basis(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size):
    batch, channels = x.shape[:2]
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
    # The einsum leaves atom_out channels-last, and conv2d keeps that layout; the layers after this one
    # would then get channels-last weight gradients, which DDP's buckets (laid out like the weights) reject.
    return F.conv2d(atom_out, weight, bias).contiguous()
