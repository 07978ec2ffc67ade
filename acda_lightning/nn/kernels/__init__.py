"""ACDA forward implementations, each computing the same function (see ``nn.reference``).

Every implementation has the signature
``impl(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size)``
with alpha (B, m, K, H_out, W_out), bases (K, k, k) or None (alpha holds the k*k atom
entries directly), coefficients A (O, C, m) and bias (O,) or None.
"""

from __future__ import annotations

import torch

from .basis import acda_basis
from .unfold import acda_unfold

IMPLEMENTATIONS = {"unfold": acda_unfold, "basis": acda_basis}


def resolve_impl(impl: str, x: torch.Tensor) -> str:
    """The concrete implementation name for ``impl`` on this input's device and dtype."""
    if impl != "auto":
        return impl
    # Basis-first was 1.6-3.3x faster than unfold (CPU, fp32, B=2, 64->64, 32x32, fwd+bwd,
    # k = 3/5/7; README "Speed") and keeps a C*K instead of a C*k*k intermediate. Fused GPU
    # kernels will be chosen here once they exist.
    return "basis"
