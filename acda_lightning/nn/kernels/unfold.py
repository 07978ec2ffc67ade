"""The paper's two-layer implementation: unfold, per-pixel atom convolution, then A as a 1x1 conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def acda_unfold(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size):
    batch, channels = x.shape[:2]
    num_atoms = alpha.shape[1]
    out_h, out_w = alpha.shape[-2:]
    if bases is None:
        atoms = alpha.reshape(batch, num_atoms, kernel_size * kernel_size, out_h * out_w)
    else:
        atoms = torch.einsum("bmkp,kl->bmlp", alpha.flatten(-2), bases.flatten(1))
    patches = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)
    patches = patches.reshape(batch, channels, kernel_size * kernel_size, out_h * out_w)
    atom_out = torch.einsum("bmlp,bclp->bcmp", atoms, patches)
    atom_out = atom_out.reshape(batch, channels * num_atoms, out_h, out_w)
    weight = coefficients.reshape(coefficients.shape[0], -1, 1, 1)
    # The einsum leaves atom_out channels-last, and conv2d keeps that layout; the layers after this one
    # would then get channels-last weight gradients, which DDP's buckets (laid out like the weights) reject.
    return F.conv2d(atom_out, weight, bias).contiguous()
