"""Fused CPU ACDA: atoms formed first (D = alpha . bases), then one per-pixel pass over x in NHWC bands.

The C++ kernel (``fused_cpu.cpp``) applies each pixel's m atoms to its window and feeds the
band's (pixels x C*m) response straight into the shared 1x1 (a BLAS GEMM), so the only
full-size tensors are x, the atoms and y; backward recomputes each band's response instead of
storing it. The kernel is one ``torch.library`` custom op with its backward op, so autograd,
``torch.compile`` and ``torch.export`` each see a single op. It is compiled on first use with the
machine's C++ compiler and cached under ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``); later processes only load it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import warnings
from pathlib import Path

import torch

from .precision import autocast_disabled, result_dtype

SOURCE = Path(__file__).with_name("fused_cpu.cpp")


def _cpu_signature() -> str:
    """The build uses -march=native, so a cached binary is keyed by the CPU it was built for."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return hashlib.sha1(f"{platform.machine()} {flags}".encode()).hexdigest()[:8]


@functools.cache
def extension():
    """The compiled kernel module, or None (with one warning) when it cannot be built here."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        warnings.warn(
            f"ACDA fused CPU kernel unavailable: no C++ compiler ({compiler!r}) found; "
            "impl='auto' falls back to 'basis'",
            stacklevel=2,
        )
        return None
    from torch.utils.cpp_extension import load

    try:
        load(
            name=f"acda_fused_cpu_{_cpu_signature()}",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,  # the library registers torch.ops.acda_fused_cpu itself
        )
        return torch.ops.acda_fused_cpu
    except (RuntimeError, OSError, ImportError) as error:
        warnings.warn(f"ACDA fused CPU kernel failed to build ({error}); impl='auto' falls back to 'basis'")
        return None


def available() -> bool:
    return extension() is not None


def _require_extension():
    module = extension()
    if module is None:
        raise RuntimeError("impl='fused' needs the C++ kernel, which could not be built here; use impl='basis'")
    return module


def _padded_nhwc(x: torch.Tensor, padding: int) -> torch.Tensor:
    """x zero-padded in NHWC, written in one copy (pad-then-permute would hold two padded copies)."""
    batch, channels, height, width = x.shape
    padded = x.new_zeros(batch, height + 2 * padding, width + 2 * padding, channels)
    padded[:, padding : padding + height, padding : padding + width].copy_(x.permute(0, 2, 3, 1))
    return padded


def _gemm_weight(coefficients: torch.Tensor) -> torch.Tensor:
    """A (O, C, m) as the (O, m*C) matrix the kernel multiplies its [atom][channel] responses with."""
    return coefficients.permute(0, 2, 1).reshape(coefficients.shape[0], -1).contiguous()


def _kernel_args(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation) -> tuple:
    """The C++ kernel's operands: x padded in NHWC, alpha and bases contiguous, A as (O, m*C)."""
    return (
        _padded_nhwc(x, padding),
        alpha.contiguous(),
        bases.contiguous(),
        _gemm_weight(coefficients),
        kernel_size,
        stride,
        dilation,
    )


@torch.library.custom_op("acda_lightning::fused_acda", mutates_args=(), device_types="cpu")
def fused_acda(
    x: torch.Tensor,
    alpha: torch.Tensor,
    bases: torch.Tensor,
    coefficients: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """y[b,o,i,j] = sum_{c,a,t} A[o,c,a] (alpha[b,a,:,i,j] . bases[:,t]) xpad[b,c,window_t(i,j)], no bias.

    x (B, C, H, W), alpha (B, m, K, Ho, Wo), bases (K, k*k) (fixed: no gradient), A (O, C, m).
    """
    operands = _kernel_args(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation)
    return _require_extension().forward(*operands)


@fused_acda.register_fake
def _(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation):
    return x.new_empty(x.shape[0], coefficients.shape[0], alpha.shape[3], alpha.shape[4])


@torch.library.custom_op("acda_lightning::fused_acda_backward", mutates_args=(), device_types="cpu")
def fused_acda_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
    bases: torch.Tensor,
    coefficients: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_xpad, grad_alpha, grad_weight = _require_extension().backward(
        grad.contiguous(), *_kernel_args(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation)
    )
    height, width = x.shape[-2:]
    grad_x = grad_xpad[:, padding : padding + height, padding : padding + width].permute(0, 3, 1, 2)
    out_channels, in_channels, num_atoms = coefficients.shape
    grad_coefficients = grad_weight.view(out_channels, num_atoms, in_channels).permute(0, 2, 1)
    return (
        grad_x.contiguous(memory_format=_grad_x_format(x)),
        grad_alpha.contiguous(),
        grad_coefficients.contiguous(),
    )


def _grad_x_format(x: torch.Tensor) -> torch.memory_format:
    """grad_x keeps a channels_last input's layout (the kernel's gradient is NHWC already)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@fused_acda_backward.register_fake
def _(grad, x, alpha, bases, coefficients, kernel_size, stride, padding, dilation):
    # Strides as the real op returns them (compile's backward graph asserts them).
    return (
        torch.empty_like(x, memory_format=_grad_x_format(x)),
        torch.empty_like(alpha, memory_format=torch.contiguous_format),
        torch.empty_like(coefficients, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    x, alpha, bases, coefficients, *geometry = inputs
    ctx.save_for_backward(x, alpha, bases, coefficients)
    ctx.geometry = geometry


def _backward(ctx, grad):
    x, alpha, bases, coefficients = ctx.saved_tensors
    grad_x, grad_alpha, grad_coefficients = fused_acda_backward(grad, x, alpha, bases, coefficients, *ctx.geometry)
    return grad_x, grad_alpha, None, grad_coefficients, None, None, None, None


fused_acda.register_autograd(_backward, setup_context=_setup_context)


def acda_fused(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size):
    """The ``impl`` entry point; bf16/fp16 inputs are computed in fp32 and the result cast back."""
    output_dtype = result_dtype(x, alpha)
    compute_dtype = torch.float64 if output_dtype == torch.float64 else torch.float32
    if bases is None:  # alpha holds the k*k atom entries directly: the bases are the one-hot filters
        bases = torch.eye(kernel_size * kernel_size, device=x.device)
    with autocast_disabled(x.device.type):
        output = fused_acda(
            x.to(compute_dtype),
            alpha.to(compute_dtype),
            bases.flatten(1).to(compute_dtype),
            coefficients.to(compute_dtype),
            kernel_size,
            stride,
            padding,
            dilation,
        )
        if bias is not None:  # in place: the op's output is fresh and its backward does not need it
            output.add_(bias.to(compute_dtype).view(1, -1, 1, 1))
    return output.to(output_dtype)
