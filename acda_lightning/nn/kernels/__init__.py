"""ACDA forward implementations, each computing the same function (see ``nn.reference``).

Every implementation has the signature
``impl(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size, groups=1)``
with alpha (B, m, K, H_out, W_out), bases (K, k, k) or None (alpha holds the k*k atom
entries directly), coefficients A (O, C/groups, m) and bias (O,) or None.
"""

from __future__ import annotations

import os
import warnings

import torch

from . import fused, precision, triton_acda
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


def resolve_impl(impl: str, x: torch.Tensor, kernel_size: int = 1, out_pixels: int | None = None,
                 stride: int = 1, dilation: int = 1, groups: int = 1) -> str:
    """The concrete implementation for ``impl`` on this input's device, dtype and size.

    ``ACDA_IMPL`` (environment: auto or any implementation) replaces every layer's ``impl`` for the run.
    "auto" on CPU: see ``cpu_auto_impl``; on CUDA: see ``cuda_impl``.
    """
    impl = environment_impl() or impl
    if x.device.type == "cuda":
        return cuda_impl(impl, x, kernel_size, stride, dilation, groups)
    if impl != "auto":
        return impl
    if x.device.type == "cpu":
        return cpu_auto_impl(x, kernel_size, out_pixels)
    return "basis"


def cpu_auto_impl(x: torch.Tensor, kernel_size: int, out_pixels: int | None = None) -> str:
    """"fused" for float layers worth its one-time build where a compiler can build it, else "basis".

    Measured on a 2-core Intel Xeon (AVX-512; ``acda bench layer``, docs/decisions.md): at 128 channels,
    64x64, "fused" runs forward+backward 3-6x faster than "basis" at k=3-7 with 3-6x less memory, on
    every 3x3 layer of a converted resnet18 it is faster than "basis", and on LeNet's 3- to 8-channel
    5x5 layers it is 0.85-1.07x basis (it vectorises over pixels, so few channels cost it nothing extra).
    A fixed rule rather than a per-shape timing at first use: every DDP rank decides the same without
    talking to the others, and a timing on a loaded machine would pick at random between impls that
    differ by less than the noise.
    """
    if not (x.is_floating_point() and x.dim() == 4):
        return "basis"
    pixels = x.shape[-2] * x.shape[-1] if out_pixels is None else out_pixels
    large = x.shape[0] * x.shape[1] * pixels * kernel_size * kernel_size >= FUSED_MIN_WORK
    if large and fused.available():
        return "fused"
    return "basis"


# Any implementation, or auto: a run-wide switch, e.g. ACDA_IMPL=basis to rule a kernel out.
ENVIRONMENT_IMPLS = ("auto", *IMPLEMENTATIONS)


def environment_impl() -> str | None:
    """``ACDA_IMPL`` when set (checked against ENVIRONMENT_IMPLS), else None."""
    value = os.environ.get("ACDA_IMPL", "").strip()
    if not value:
        return None
    if value not in ENVIRONMENT_IMPLS:
        raise ValueError(f"ACDA_IMPL={value!r} is not an ACDA implementation: set it to one of "
                         f"{', '.join(ENVIRONMENT_IMPLS)}, or unset it to use each layer's own impl")
    return value


def _deterministic() -> bool:
    return torch.are_deterministic_algorithms_enabled() or torch.backends.cudnn.deterministic


def cuda_impl(impl: str, x: torch.Tensor, kernel_size: int, stride: int, dilation: int, groups: int = 1) -> str:
    """The CUDA choice. "auto" gives "triton" only where all of these hold, else "basis":
    an ungrouped layer (the grouped Triton path is correct under the interpreter but untimed: with one
    output per group a depthwise layer fills 1/16 of each dot); fp32/fp16/bf16 4-D input; Triton compiles here; an NVIDIA GPU of compute capability >= 8.0
    (on 7.x its dots get no tensor cores while cuDNN's do; on AMD its fp16/bf16 path does not
    compile); neither ``torch.use_deterministic_algorithms`` nor ``cudnn.deterministic`` is on
    (no GPU run has shown the kernel bitwise reproducible yet); and the kernel has passed its self-check (``triton_self_check``)
    on this device for this dtype, kernel size, stride and dilation. An explicit "triton" under
    determinism is an error rather than a silently non-deterministic gradient.
    """
    if impl == "triton" and _deterministic():
        raise RuntimeError(
            "impl='triton' is not known to be deterministic on a GPU, but deterministic algorithms are "
            "requested (torch.use_deterministic_algorithms or cudnn.deterministic): use impl='basis' or 'auto'"
        )
    if impl != "auto":
        return impl
    eligible = (
        groups == 1
        and x.dim() == 4
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and not _deterministic()
        and torch.version.hip is None
        and triton_acda.available(x.device)
        and torch.cuda.get_device_capability(x.device) >= (8, 0)
    )
    if eligible and triton_self_check(x.device, x.dtype, kernel_size, stride, dilation):
        return "triton"
    return "basis"


# (device, dtype, kernel size, stride, dilation) -> whether the Triton kernel passed its self-check there.
_SELF_CHECKS: dict[tuple, bool] = {}
# Largest error relative to the largest value the self-check accepts: several times each dtype's
# rounding (TF32 where torch allows it for fp32), far below a wrong address or a miscompiled tile.
SELF_CHECK_TOLERANCE = {torch.float32: 5e-3, torch.float16: 2e-2, torch.bfloat16: 8e-2}


def triton_self_check(device: torch.device, dtype: torch.dtype, kernel_size: int, stride: int, dilation: int) -> bool:
    """Whether the Triton kernel runs and matches "basis" here: forward and backward of a small probe,
    once per key. On an error or a mismatch it warns once, naming the cause, and the key uses "basis"."""
    key = (str(device), dtype, kernel_size, stride, dilation)
    if key not in _SELF_CHECKS:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return False  # no probe inside a CUDA graph capture (its warm-up call has normally run it)
        try:
            cause = probe_mismatch(device, dtype, kernel_size, stride, dilation)
        except Exception as error:  # any failure to build or launch (compiler, headers, libcuda, ...)
            cause = f"{type(error).__name__}: {error}"
        if cause:
            warnings.warn(
                f"ACDA: the Triton kernel failed its self-check on {device} ({dtype}, kernel_size={kernel_size}, "
                f"stride={stride}, dilation={dilation}): {cause}. These layers use impl='basis' "
                "(ACDA_IMPL=triton forces the kernel).",
                RuntimeWarning,
                stacklevel=2,
            )
        _SELF_CHECKS[key] = not cause
    return _SELF_CHECKS[key]


if torch.cuda.is_available():
    # A real run on the device, never traced into a compiled graph (torch.compile calls it eagerly, in a
    # graph break). Only where CUDA is: the decorator imports torch._dynamo, seconds on a CPU-only import.
    triton_self_check = torch.compiler.disable(triton_self_check)


def probe_mismatch(device: torch.device, dtype: torch.dtype, kernel_size: int, stride: int, dilation: int) -> str:
    """Forward and backward of a small random layer call, Triton vs "basis" (in fp32 on the same rounded
    operands): "" when output and every gradient agree within SELF_CHECK_TOLERANCE, else what differs."""
    generator = torch.Generator().manual_seed(0)
    padding = dilation * (kernel_size - 1) // 2
    height = dilation * (kernel_size - 1) + 2 * stride + 3  # several output pixels, interior and border
    out_h, out_w = ((n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1 for n in (height, height + 1))
    shapes = [(2, 8, height, height + 1), (2, 3, kernel_size**2, out_h, out_w), (6, 8, 3), (6,)]
    tensors = [torch.randn(shape, generator=generator).to(device, dtype) for shape in shapes]
    cotangent = torch.randn((2, 6, out_h, out_w), generator=generator).to(device)
    geometry = (stride, padding, dilation, kernel_size)
    results = []
    with torch.enable_grad(), precision.autocast_disabled(torch.device(device).type):
        for run, operands in ((triton_acda.acda_triton, tensors), (acda_basis, [t.float() for t in tensors])):
            leaves = [t.detach().requires_grad_() for t in operands]
            x, alpha, coefficients, bias = leaves
            output = run(x, alpha, None, coefficients, bias, *geometry)
            grads = torch.autograd.grad((output.float() * cotangent).sum(), leaves)
            results.append([output, *grads])
    tolerance = SELF_CHECK_TOLERANCE[dtype]
    for name, got, want in zip(("output", "grad x", "grad alpha", "grad A", "grad bias"), *results):
        error = ((got.float() - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
        if not error <= tolerance:  # also catches NaN
            return f"{name} differs from impl='basis' by {error:.2g} of its largest value (tolerance {tolerance:g})"
    return ""

