"""Fused CPU ACDA: per band of output rows, atoms formed (D = alpha . bases), one per-pixel pass over x.

The C++ kernel (``fused_cpu.cpp``) gives each thread one band at a time: it applies each pixel's m
atoms to its window, vectorised over runs of consecutive output pixels (the band's rows of x zero-padded and
split into stride x stride phase planes in the thread's scratch, so neighbouring pixels' taps are neighbouring
addresses at every stride and dilation), and feeds the band's (C*m x pixels) responses straight into the
shared 1x1 (oneDNN's matmul, writing the band of y in place; with groups, one GEMM per group, or, one input
channel per group as in depthwise, a vectorised per-channel sum), so the only full-size tensors are x, alpha
and y; backward recomputes each band's responses instead of storing them. Bands may span several small images, and
a batch of at most 1024 output pixels (deep layers) is one band whose GEMMs use every thread, so deep layers
keep a wide GEMM. The kernel is one ``torch.library`` custom op with its backward op, so ``torch.compile`` and
``torch.export`` each see a single op; eager steps call the same ops through a plain autograd.Function. It is
compiled on first use, once per ISA (AVX-512 or AVX2), with the machine's C++ compiler and cached under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``); later processes only load it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

from .precision import autocast_disabled, result_dtype

SOURCE = Path(__file__).with_name("fused_cpu.cpp")


# Per ISA torch reports (torch.backends.cpu.get_cpu_capability(), which honours ATEN_CPU_CAPABILITY):
# the compiler flags of that ISA's build and the vector width the kernel's register blocks use. A
# named ISA level (not -march=native) runs on every CPU that has it, so the cache key is the ISA.
ISA_FLAGS = {
    "AVX512": ["-march=x86-64-v4", "-mprefer-vector-width=512", "-DACDA_VECTOR_BYTES=64"],
    "AVX2": ["-march=x86-64-v3", "-DACDA_VECTOR_BYTES=32"],
}
BUILD_SECONDS = "30-60 s"


def isa() -> str:
    return torch.backends.cpu.get_cpu_capability()


def _module_name(isa_name: str) -> str:
    """One cached binary per ISA and torch version (a binary built for one never loads on another)."""
    version = "".join(ch if ch.isalnum() else "_" for ch in torch.__version__)
    return f"acda_fused_cpu_{isa_name.lower()}_torch{version}"


def _unavailable(cause: str) -> None:
    warnings.warn(f"ACDA fused CPU kernel unavailable: {cause}; impl='auto' uses 'basis'", stacklevel=3)


def _quiet_cpp_extension():
    """torch.utils.cpp_extension, imported without its "No CUDA runtime is found" log line (irrelevant on CPU)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


@functools.cache
def extension():
    """The compiled kernel module, or None (with one warning naming the cause) when it cannot be built here."""
    isa_name = isa()
    if isa_name not in ISA_FLAGS:
        _unavailable(f"no vectorised build for this CPU's ISA ({isa_name}; it has {sorted(ISA_FLAGS)})")
        return None
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        _unavailable(f"no C++ compiler ({compiler!r}) found")
        return None
    cpp_extension = _quiet_cpp_extension()
    name = _module_name(isa_name)
    try:
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        if not (build_dir / f"{name}.so").exists():
            print(f"acda: building the fused CPU kernel for {isa_name} (once per machine, usually {BUILD_SECONDS})",
                  file=sys.stderr, flush=True)
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-fopenmp", *ISA_FLAGS[isa_name]],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,  # the library registers torch.ops.acda_fused_cpu itself
        )
        return torch.ops.acda_fused_cpu
    except (RuntimeError, OSError, ImportError) as error:
        _unavailable(f"the build failed ({error})")
        return None


def available() -> bool:
    return extension() is not None


def _require_extension():
    module = extension()
    if module is None:
        raise RuntimeError("impl='fused' needs the C++ kernel, which could not be built here; use impl='basis'")
    return module


def _kernel_args(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups, bf16_gemm) -> tuple:
    """The C++ kernel's operands (it pads x into its phase planes itself)."""
    return (x, alpha.contiguous(), bases.contiguous(), coefficients, kernel_size, stride, padding, dilation, groups,
            bf16_gemm)


def _forward(
    x: torch.Tensor,
    alpha: torch.Tensor,
    bases: torch.Tensor,
    coefficients: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int = 1,
    bf16_gemm: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y[b,o,i,j] = sum_{c,a,t} A[o,c,a] (alpha[b,a,:,i,j] . bases[:,t]) xpad[b,c,window_t(i,j)] + bias[o].

    x (B, C, H, W), alpha (B, m, K, Ho, Wo), bases (K, k*k) (fixed: no gradient), A (O, C/groups, m):
    output channel o sums over only the C/groups input channels of its group (as nn.Conv2d's groups).
    bf16_gemm: the GEMMs with A (forward and backward) take bf16 operands, accumulating in fp32 (with one
    input channel per group there is no GEMM, and the flag has no effect). bias (O,) or None: written into y
    before the GEMM adds to it (no pass over y of its own).
    """
    operands = _kernel_args(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups, bf16_gemm)
    return _require_extension().forward(*operands, bias)


def _backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
    bases: torch.Tensor,
    coefficients: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int = 1,
    bf16_gemm: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    operands = _kernel_args(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups, bf16_gemm)
    grad_x, grad_alpha, grad_coefficients = _require_extension().backward(grad, *operands)
    return (
        grad_x.contiguous(memory_format=_grad_x_format(x)),
        grad_alpha.contiguous(),
        grad_coefficients.contiguous(),
    )


# The kernel as torch.library custom ops, which torch.compile and torch.export see as single ops.
fused_acda = torch.library.custom_op("acda_lightning::fused_acda", mutates_args=(), device_types="cpu")(_forward)
fused_acda_backward = torch.library.custom_op(
    "acda_lightning::fused_acda_backward", mutates_args=(), device_types="cpu"
)(_backward)


def _grad_x_format(x: torch.Tensor) -> torch.memory_format:
    """grad_x in a channels_last input's own layout (the kernel returns NCHW), as autograd and DDP expect."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@fused_acda.register_fake
def _(x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups=1, bf16_gemm=False, bias=None):
    return x.new_empty(x.shape[0], coefficients.shape[0], alpha.shape[3], alpha.shape[4])


@fused_acda_backward.register_fake
def _(grad, x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups=1, bf16_gemm=False):
    # Strides as the real op returns them (compile's backward graph asserts them).
    return (
        torch.empty_like(x, memory_format=_grad_x_format(x)),
        torch.empty_like(alpha, memory_format=torch.contiguous_format),
        torch.empty_like(coefficients, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    x, alpha, bases, coefficients, *geometry, bias = inputs
    ctx.save_for_backward(x, alpha, bases, coefficients)
    ctx.geometry = geometry
    ctx.has_bias = bias is not None


def _gradients(ctx, grad, kernel_backward):
    x, alpha, bases, coefficients = ctx.saved_tensors
    grad_x, grad_alpha, grad_coefficients = kernel_backward(grad, x, alpha, bases, coefficients, *ctx.geometry)
    grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias else None
    return grad_x, grad_alpha, None, grad_coefficients, *[None] * len(ctx.geometry), grad_bias


fused_acda.register_autograd(lambda ctx, grad: _gradients(ctx, grad, fused_acda_backward), setup_context=_setup_context)


class _EagerFusedACDA(torch.autograd.Function):
    """fused_acda's autograd for plain tensors outside torch.compile/export: the same kernel calls and gradients
    without the custom ops' Python dispatch, which cost 0.2 ms more per layer step on a 1x4x4x4 layer and 0.5 ms
    more at Ad-ResNet-s' 4x256x5x5 (where the custom op took 1.3x the raw kernel's time)."""

    @staticmethod
    def forward(ctx, *inputs):  # (no separate setup_context: apply would bind default arguments with inspect)
        _setup_context(ctx, inputs, None)
        return _forward(*inputs)

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative raises, as the custom op's does
    def backward(ctx, grad):
        return _gradients(ctx, grad, _backward)


def _traced(x: torch.Tensor) -> bool:
    """Whether x is being traced (torch.compile, torch.export, a fake or functional tensor): the custom ops then."""
    return torch.compiler.is_compiling() or type(x) is not torch.Tensor


def acda_fused(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size, groups=1):
    """The ``impl`` entry point: fp16 inputs are computed in fp32 and the result cast back; where the result
    is bf16 (bf16 inputs, or autocast to bf16) the large contractions (with A) run in bf16, accumulating
    in fp32, and the per-pixel pass in fp32."""
    output_dtype = result_dtype(x, alpha)
    compute_dtype = torch.float64 if output_dtype == torch.float64 else torch.float32
    if bases is None:  # alpha holds the k*k atom entries directly: the bases are the one-hot filters
        bases = torch.eye(kernel_size * kernel_size, device=x.device)
    kernel = fused_acda if _traced(x) else _EagerFusedACDA.apply
    with autocast_disabled(x.device.type):
        output = kernel(
            x.to(compute_dtype),
            alpha.to(compute_dtype),
            bases.flatten(1).to(compute_dtype),
            coefficients.to(compute_dtype),
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            output_dtype == torch.bfloat16,
            None if bias is None else bias.to(compute_dtype),
        )
    return output.to(output_dtype)
