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
) -> torch.Tensor:
    """y[b,o,i,j] = bias[o] + sum_{c,a,u,v} A[o,c,a] D[b,a,u,v,i,j] xpad[b,c,i*s+u*d,j*s+v*d].

    x: (B, C, H, W); atoms D: (B, m, k, k, H_out, W_out); coefficients A: (O, C, m).
    Deliberately slow: one window at a time, so it shares no code path with the fast impls.
    """
    kernel_size = atoms.shape[2]
    out_h, out_w = atoms.shape[-2:]
    xpad = F.pad(x, (padding,) * 4)
    span = dilation * (kernel_size - 1) + 1
    rows = []
    for i in range(out_h):
        row = []
        for j in range(out_w):
            top, left = i * stride, j * stride
            window = xpad[:, :, top : top + span : dilation, left : left + span : dilation]
            filters = torch.einsum("oca,bauv->bocuv", coefficients, atoms[..., i, j])
            value = torch.einsum("bocuv,bcuv->bo", filters, window)
            row.append(value if bias is None else value + bias)
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)
