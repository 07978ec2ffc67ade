"""ACDA forward implementations, each computing the same function (see ``nn.reference``).

Every implementation has the signature
``impl(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size)``
with alpha (B, m, K, H_out, W_out), bases (K, k, k) or None (alpha holds the k*k atom
entries directly), coefficients A (O, C, m) and bias (O,) or None.
"""

from __future__ import annotations

import torch

from . import fused, triton_acda
from .basis import acda_basis
from .fused import acda_fused
from .triton_acda import acda_triton
from .unfold import acda_unfold

IMPLEMENTATIONS = {"unfold": acda_unfold, "basis": acda_basis, "fused": acda_fused, "triton": acda_triton}


# Below this much work (batch * in_channels * out_pixels * k*k) a layer takes well under a millisecond
# either way, so "auto" keeps it on "basis" and never pays the kernel build for it.
FUSED_MIN_WORK = 1 << 18


def device_impls(device: torch.device | str) -> list[str]:
    """The implementations offered on this device type: "fused" is CPU-only, "triton" CUDA-only.

    (Neither is checked for being buildable here: callers skip what is not, as ``acda bench`` does.)
    """
    excluded = {"cpu": {"triton"}, "cuda": {"fused"}}.get(torch.device(device).type, {"fused", "triton"})
    return sorted(set(IMPLEMENTATIONS) - excluded)


def resolve_impl(impl: str, x: torch.Tensor, kernel_size: int = 1, out_pixels: int | None = None) -> str:
    """The concrete implementation for ``impl`` on this input's device, dtype and size.

    On CPU see ``cpu_auto_impl``. On CUDA it picks the fused Triton kernel for
    fp32/fp16/bf16 inputs where Triton is importable (not yet measured on a GPU), else "basis";
    also "basis" under ``torch.use_deterministic_algorithms`` (the kernel's backward adds atomically).
    """
    if impl != "auto":
        return impl
    if x.device.type == "cuda" and x.dim() == 4:
        half_or_single = x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        if half_or_single and not torch.are_deterministic_algorithms_enabled() and triton_acda.available(x.device):
            return "triton"
        return "basis"
    if x.device.type == "cpu":
        return cpu_auto_impl(x, kernel_size, out_pixels)
    return "basis"


def cpu_auto_impl(x: torch.Tensor, kernel_size: int, out_pixels: int | None = None) -> str:
    """"fused" for float layers worth its one-time build where a compiler can build it, else "basis".

    Measured on a 2-core AMD EPYC (``acda bench layer``): at 128 channels, 64x64, "fused" runs forward+
    backward 2-4x faster than "basis" at k=3-7 and needs 3-6x less memory; on resnet18's 3x3 layers at
    112 px the two differ by less than that shared machine's noise. A fixed rule rather than a per-shape
    timing at first use: every DDP rank decides the same without talking to the others, and a timing on
    a loaded machine would pick at random between impls that differ by less than the noise.
    """
    if not (x.is_floating_point() and x.dim() == 4):
        return "basis"
    pixels = x.shape[-2] * x.shape[-1] if out_pixels is None else out_pixels
    if x.shape[0] * x.shape[1] * pixels * kernel_size * kernel_size >= FUSED_MIN_WORK and fused.available():
        return "fused"
    return "basis"
