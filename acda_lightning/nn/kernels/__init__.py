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
    # Measured with `acda bench layer` (README, Performance): basis-first is the faster of
    # the two everywhere we measured, and needs less memory for k >= 5.
    return "basis"
