"""The paper's two-layer implementation: unfold, per-pixel atom convolution, then A as a 1x1 conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .basis import memory_format_of


def acda_unfold(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size, groups=1):
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
    # each group's channels are one contiguous block of atom_out (as in acda_basis), laid out as the input
    return F.conv2d(atom_out, weight, bias, groups=groups).contiguous(memory_format=memory_format_of(x))
