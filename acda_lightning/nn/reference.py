"""The naive per-pixel ACDA formula: the ground truth every implementation is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def acda_reference(
    x: torch.Tensor,
    atoms: torch.Tensor,
    coefficients: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    dilation: int,
    groups: int = 1,
) -> torch.Tensor:
    """y[b,o,i,j] = bias[o] + sum_{c,a,u,v} A[o,c,a] D[b,a,u,v,i,j] xpad[b,g(o)*C/g+c,i*s+u*d,j*s+v*d].

    x: (B, C, H, W); atoms D: (B, m, k, k, H_out, W_out); coefficients A: (O, C/groups, m).
    Output o reads only the input channels of its group g(o) = o // (O/groups), as in nn.Conv2d;
    the atoms are shared by all groups. Depthwise (groups = C = O): y_c = sum_a A[c,a] (D_a * x_c).
    Deliberately slow: one window at a time, so it shares no code path with the fast impls.
    """
    kernel_size = atoms.shape[2]
    out_h, out_w = atoms.shape[-2:]
    batch, channels = x.shape[:2]
    out_channels = coefficients.shape[0]
    # (groups, O/groups, C/groups, m): each group's block of A
    grouped_coefficients = coefficients.reshape(groups, out_channels // groups, channels // groups, -1)
    xpad = F.pad(x, (padding,) * 4)
    span = dilation * (kernel_size - 1) + 1
    rows = []
    for i in range(out_h):
        row = []
        for j in range(out_w):
            top, left = i * stride, j * stride
            window = xpad[:, :, top : top + span : dilation, left : left + span : dilation]
            window = window.reshape(batch, groups, channels // groups, kernel_size, kernel_size)
            filters = torch.einsum("goca,bauv->bgocuv", grouped_coefficients, atoms[..., i, j])
            value = torch.einsum("bgocuv,bgcuv->bgo", filters, window).reshape(batch, out_channels)
            row.append(value if bias is None else value + bias)
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)
