"""Fused GPU ACDA in Triton: the per-pixel atoms' window responses go straight into the shared 1x1 (A).

Design (the CPU ``fused`` kernel's, on GPU tiles). As there, the atoms come first: D = alpha . bases
(m*k*k values per output pixel) with one small einsum per call, or alpha itself (a view) when
there are no bases; and x is zero-padded once, so every tap of every output pixel is in bounds
and the inner loop has no bounds arithmetic. One program owns BLOCK_P output pixels of one image
and BLOCK_O output channels. For each block of BLOCK_C input channels it computes the responses
z[p, c, a] = sum_t xpad[window_t(p), c] D[p, a, t] on tensor cores, as a batched ``tl.dot`` (per pixel
its (channels x taps) window times its (taps x atoms) atoms, 16 taps at a time, atoms padded to a
power of two), and feeds that tile, flattened to (pixels x (channel, atom)), straight into ``tl.dot``
with A: the (B, C*m, H, W) response never exists in global memory, nor do the unfolded patches. Every
tensor is addressed through its strides (a ``channels_last`` input gives a ``channels_last`` output).
One output block spans up to 128 channels (64 with 64-bit offsets); with more, z is recomputed once
per output block.

Groups (``nn.Conv2d``'s geometry; A is (O, C/g, m), the atoms D are shared by every group): an output
block lies inside one group and loops over that group's C/g input channels only; when O/g is below 16
(depthwise: 1, or k with a channel multiplier k) the block is padded to 16 and masked, so a depthwise
layer's ``tl.dot`` does 1/16 useful work: simple and correct, not yet a depthwise-specific kernel. The
backward kernels work per input channel (z, gz, grad_D, grad_x) and are the same for every groups; only
its two GEMMs become per-group (block-diagonal A).

Backward recomputes instead of storing: only x, alpha and A are saved, as for ``fused`` (storing z
would cost C*m values per pixel, m times the input). It is three kernels around two GEMMs, and no
program adds into another's output (no atomics; each value is written once):
gz[b, m, c, p] = sum_o gy[b, o, p] A[o, c, m] (torch GEMM); the responses kernel recomputes
z[b, m, c, p]; grad_A = gy^T z (torch GEMM over batch and pixels); the atom-gradient kernel
grad_D[p, m, t] = sum_c xpad[window_t(p), c] gz[p, m, c], the same batched dot transposed, one
program per pixel tile looping over every channel; and the input-gradient kernel gathers, per input pixel, over the (output pixel,
tap) pairs whose window covers it: grad_x[q, c] = sum D[p, m, t] gz[p, m, c] (CUDA cores). The grad_x (and
grad_D) kernel is skipped when x (alpha) needs no gradient. Then grad_alpha = grad_D . bases^T
(einsum). The bases are fixed: no gradient. Transient memory: D (in x's dtype for fp16/bf16, else
float32) in forward; D, padded x, z and gz (each m times x, same dtype) and grad_D (float32) in backward. Under ``torch.use_deterministic_algorithms`` or
``cudnn.deterministic`` "auto" does not pick this kernel and an explicit impl="triton" is an error
(``kernels.cuda_impl``) until a GPU run has shown it bitwise reproducible.

Precision: every product is accumulated in float32 (float64 for float64 inputs); the result is
written in the input's (or autocast's) dtype. The ``tl.dot`` operands are fp16/bf16 for fp16/bf16
inputs (their tensor cores), TF32 for float32 inputs exactly when torch allows TF32 for float32
matmuls (``torch.backends.cuda.matmul.allow_tf32``, which ``set_float32_matmul_precision("high")``
sets), and exact IEEE float32 otherwise. Tested under Triton's interpreter against ``acda_reference``
(tests/test_triton_kernel.py): float32 to 1e-4 (forward) and 1e-3 (gradients), float64 to 1e-10,
bf16 inputs to 2e-2 (output) and 5e-2 (gradients) of the largest value.

Sizes: offsets inside one image are 32-bit unless some per-image tensor spans more than 2^31 - 1
elements (e.g. 1x513x2048x2048), where every index is 64-bit (a separate compilation, with half-width
forward output and gather channel blocks: 64-bit addresses take registers); the batch
offset is always 64-bit. The batch is the grid's z dimension, launched in slices of 65535 images.

Where it runs: CUDA tensors, with Triton importable. On CPU only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before ``triton`` is first imported: Triton's own library functions
are compiled or interpreted from that moment, for the whole process), which is how it is tested
without a GPU. The block sizes below are untimed: no GPU has run this kernel yet. On a GPU the forward
is autotuned (``triton.autotune``) over a short list of output block widths; the backward is not.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .precision import autocast_disabled, result_dtype

try:
    import triton
    import triton.language as tl
except ImportError:  # the package still imports without Triton; available() says False
    triton = tl = None

# Tile sizes: output pixels, input channels and output channels per program, and warps; the taps are
# contracted TAP_BLOCK at a time (the least contraction a bf16/fp16 ``tl.dot`` takes, so the k*k taps
# are padded to 16, 32, 64 at k = 3, 5, 7). Not yet timed on a GPU. Chosen with ptxas (sm_90, bf16,
# k = 7, 8 atoms; tests/triton_compile_check.py): the batched window dots hold 3D tiles whose addresses
# cost registers, so 16x16 tiles are the widest that compile without spills (forward 186 registers at
# 128 outputs, 255 with a 8-byte spill at 256, 255 with spills at 32 pixels or channels; responses 128,
# atom gradient 184). A 128-wide output block computes the responses once per 128 outputs (twice at
# Table 6's 256). The forward is not software-pipelined (one stage): two stages of its fp32/fp64 A tiles
# took 98-197 KB of shared memory, past an A100's 163 KB at fp64. The input-gradient gather (2D tiles, no dot) takes 16 pixels by up to 256 channels: each
# channel block re-reads D, so at up to 256 channels D is read once per pixel tile (bf16 226 registers,
# fp64 254, no spills; 32 pixels spilled 48-128 bytes). A "<tile>_64bit" entry caps that tile where every
# index is 64-bit, which costs registers: the gather at 256 channels spilled 88-504 bytes there (sm_90 and
# sm_80, fp16 to fp64), at 128 it takes 186-225 registers without spills.
# On a GPU the forward is autotuned over FORWARD_CONFIGS per channel, output and pixel counts (and the
# compile-time settings); the interpreter runs the first. They differ in output block only: a narrower one
# gives more programs where there are few pixel tiles (deep layers) but recomputes z once per block. 4 warps,
# 32 pixels or channels at 64 outputs, and 32 outputs (fp64), spilled.
FORWARD_CONFIGS = [
    {"pixels": 16, "channels": 16, "outputs": outputs, "outputs_64bit": 64, "warps": 8, "stages": 1}
    for outputs in (128, 64)
]
BACKWARD_BLOCKS = {"pixels": 16, "channels": 16, "warps": 8}
INPUT_GRAD_BLOCKS = {"pixels": 16, "channels": 256, "channels_64bit": 128, "warps": 8}
TAP_BLOCK = 16


def _jit(fn):
    return fn if triton is None else triton.jit(fn)


@_jit
def _window_responses(corner, atoms_p, c, c_ok, p_ok, num_atoms, sx_c, step_h, step_w, sd_m, sd_t,
                      KSIZE: tl.constexpr, ATOMS: tl.constexpr, TAP_BLOCK: tl.constexpr, BLOCK_P: tl.constexpr,
                      BLOCK_C: tl.constexpr, ACC: tl.constexpr, OPERAND: tl.constexpr, DOT: tl.constexpr,
                      PRECISION: tl.constexpr):
    """z[p, c, a] = sum_t xpad[window_t(p), c] D[p, a, t] for one channel block: a batched ``tl.dot``, per
    pixel its (channels x taps) window times its (taps x atoms) atoms, TAP_BLOCK taps at a time.
    ``corner`` points at each pixel's first tap, ``atoms_p`` at each pixel's D[p, 0, 0]; taps step by
    step_h/step_w in x; atoms from ``num_atoms`` up to ATOMS (a power of two) are zero."""
    a = tl.arange(0, ATOMS)
    a_ok = a < num_atoms
    window = corner[:, None, None] + c[None, :, None] * sx_c
    window_ok = p_ok[:, None, None] & c_ok[None, :, None]
    z = tl.zeros((BLOCK_P, BLOCK_C, ATOMS), dtype=ACC)
    for t0 in range(0, KSIZE * KSIZE, TAP_BLOCK):
        t = t0 + tl.arange(0, TAP_BLOCK)
        t_ok = t < KSIZE * KSIZE
        tap = (t // KSIZE) * step_h + (t % KSIZE) * step_w
        x_t = tl.load(window + tap[None, None, :], mask=window_ok & t_ok[None, None, :], other=0.0)
        d_t = tl.load(atoms_p[:, None, None] + t[None, :, None] * sd_t + a[None, None, :] * sd_m,
                      mask=p_ok[:, None, None] & t_ok[None, :, None] & a_ok[None, None, :], other=0.0)
        z = tl.dot(x_t.to(OPERAND).to(DOT), d_t.to(OPERAND).to(DOT), z, input_precision=PRECISION)
    return z


@_jit
def _acda_forward_kernel(
    x_ptr, d_ptr, coef_ptr, bias_ptr, y_ptr,
    group_channels, group_outputs, num_atoms, out_w, pixels, stride, dilation,
    sx_b, sx_c, sx_h, sx_w,
    sd_b, sd_m, sd_t, sd_p,
    sc_o, sc_c, sc_m,
    sy_b, sy_o, sy_h, sy_w,
    KSIZE: tl.constexpr, HAS_BIAS: tl.constexpr, ATOMS: tl.constexpr, TAP_BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
    ACC: tl.constexpr, OPERAND: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr, INDEX: tl.constexpr,
):
    """y[b, o, p] = bias[o] + sum_{c, a} A[o, c, a] sum_t D[b, a, t, p] xpad[b, g*C/g + c, window_t(p)], one
    tile: output block ``program_id(1) % output_blocks`` of group g = ``program_id(1) // output_blocks``, whose
    outputs read only that group's input channels (c < C/g; A is (O, C/g, m))."""
    output_blocks = tl.cdiv(group_outputs, BLOCK_O)  # per group
    batch = tl.program_id(2).to(tl.int64)
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(INDEX)
    p_ok = p < pixels
    group = (tl.program_id(1) // output_blocks).to(INDEX)
    o_in_group = ((tl.program_id(1) % output_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)).to(INDEX)
    o_ok = o_in_group < group_outputs
    o = group * group_outputs + o_in_group
    # The top-left corner of each pixel's window in the padded input (at the group's first channel): every
    # tap is in bounds.
    corner = x_ptr + batch * sx_b + group * group_channels * sx_c \
        + (p // out_w) * stride * sx_h + (p % out_w) * stride * sx_w
    atoms_p = d_ptr + batch * sd_b + p * sd_p
    # The 1x1's contraction runs over (channel, atom) pairs, atom fastest, as z (p, c, a) flattens.
    pair = tl.arange(0, BLOCK_C * ATOMS)
    pair_atom = pair % ATOMS
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=ACC)
    for c0 in range(0, group_channels, BLOCK_C):
        c = (c0 + tl.arange(0, BLOCK_C)).to(INDEX)
        z = _window_responses(corner, atoms_p, c, c < group_channels, p_ok, num_atoms, sx_c, dilation * sx_h,
                              dilation * sx_w, sd_m, sd_t, KSIZE, ATOMS, TAP_BLOCK, BLOCK_P, BLOCK_C, ACC, OPERAND,
                              DOT, PRECISION)
        pair_channel = (c0 + pair // ATOMS).to(INDEX)
        pair_ok = (pair_channel < group_channels) & (pair_atom < num_atoms)
        w = tl.load(coef_ptr + pair_channel[:, None] * sc_c + pair_atom[:, None] * sc_m + o[None, :] * sc_o,
                    mask=pair_ok[:, None] & o_ok[None, :], other=0.0)
        z_pairs = tl.reshape(z, (BLOCK_P, BLOCK_C * ATOMS))
        acc = tl.dot(z_pairs.to(OPERAND).to(DOT), w.to(OPERAND).to(DOT), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(ACC)[None, :]
    y = y_ptr + batch * sy_b + ((p // out_w) * sy_h + (p % out_w) * sy_w)[:, None] + o[None, :] * sy_o
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & o_ok[None, :])


@_jit
def _acda_responses_kernel(
    x_ptr, d_ptr, z_ptr,
    channels, num_atoms, out_w, pixels, stride, dilation,
    sx_b, sx_c, sx_h, sx_w,
    sd_b, sd_m, sd_t, sd_p,
    sz_b, sz_m, sz_c, sz_p,
    KSIZE: tl.constexpr, ATOMS: tl.constexpr, TAP_BLOCK: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr, ACC: tl.constexpr, OPERAND: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
    INDEX: tl.constexpr,
):
    """z[b, m, c, p] = sum_t D[b, m, t, p] xpad[b, c, window_t(p)], the responses grad_A contracts with grad_y."""
    batch = tl.program_id(2).to(tl.int64)
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(INDEX)
    p_ok = p < pixels
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(INDEX)
    c_ok = c < channels
    corner = x_ptr + batch * sx_b + (p // out_w) * stride * sx_h + (p % out_w) * stride * sx_w
    z = _window_responses(corner, d_ptr + batch * sd_b + p * sd_p, c, c_ok, p_ok, num_atoms, sx_c, dilation * sx_h,
                          dilation * sx_w, sd_m, sd_t, KSIZE, ATOMS, TAP_BLOCK, BLOCK_P, BLOCK_C, ACC, OPERAND, DOT,
                          PRECISION)
    a = tl.arange(0, ATOMS)
    z_tile = z_ptr + batch * sz_b + p[:, None, None] * sz_p + c[None, :, None] * sz_c + a[None, None, :] * sz_m
    tl.store(z_tile, z.to(z_ptr.dtype.element_ty),
             mask=p_ok[:, None, None] & c_ok[None, :, None] & (a < num_atoms)[None, None, :])


@_jit
def _acda_atom_grad_kernel(
    x_ptr, gz_ptr, gd_ptr,
    channels, num_atoms, out_w, pixels, stride, dilation,
    sx_b, sx_c, sx_h, sx_w,
    sg_b, sg_m, sg_c, sg_p,
    sgd_b, sgd_m, sgd_t, sgd_p,
    KSIZE: tl.constexpr, ATOMS: tl.constexpr, TAP_BLOCK: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr, ACC: tl.constexpr, OPERAND: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr,
    INDEX: tl.constexpr,
):
    """grad_D[b, m, t, p] = sum_c xpad[b, c, window_t(p)] gz[b, m, c, p]: a batched ``tl.dot``, per pixel its
    (taps x channels) window times its (channels x atoms) gz. One program owns every channel and tap of its
    pixel tile, so each value is written once (no atomics)."""
    batch = tl.program_id(2).to(tl.int64)
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(INDEX)
    p_ok = p < pixels
    corner = x_ptr + batch * sx_b + (p // out_w) * stride * sx_h + (p % out_w) * stride * sx_w
    a = tl.arange(0, ATOMS)
    a_ok = a < num_atoms
    gz_p = gz_ptr + batch * sg_b + p * sg_p
    grad_atoms = gd_ptr + batch * sgd_b + p * sgd_p
    for t0 in range(0, KSIZE * KSIZE, TAP_BLOCK):
        t = t0 + tl.arange(0, TAP_BLOCK)
        t_ok = t < KSIZE * KSIZE
        tap = (t // KSIZE) * dilation * sx_h + (t % KSIZE) * dilation * sx_w
        total = tl.zeros((BLOCK_P, TAP_BLOCK, ATOMS), dtype=ACC)
        for c0 in range(0, channels, BLOCK_C):
            c = (c0 + tl.arange(0, BLOCK_C)).to(INDEX)
            c_ok = c < channels
            x_t = tl.load(corner[:, None, None] + tap[None, :, None] + c[None, None, :] * sx_c,
                          mask=p_ok[:, None, None] & t_ok[None, :, None] & c_ok[None, None, :], other=0.0)
            g = tl.load(gz_p[:, None, None] + c[None, :, None] * sg_c + a[None, None, :] * sg_m,
                        mask=p_ok[:, None, None] & c_ok[None, :, None] & a_ok[None, None, :], other=0.0)
            total = tl.dot(x_t.to(OPERAND).to(DOT), g.to(OPERAND).to(DOT), total, input_precision=PRECISION)
        tl.store(grad_atoms[:, None, None] + t[None, :, None] * sgd_t + a[None, None, :] * sgd_m, total,
                 mask=p_ok[:, None, None] & t_ok[None, :, None] & a_ok[None, None, :])


@_jit
def _acda_input_grad_kernel(
    gz_ptr, d_ptr, gx_ptr,
    channels, num_atoms, width, in_pixels, out_h, out_w, padding, stride, dilation,
    sg_b, sg_m, sg_c, sg_p,
    sd_b, sd_m, sd_t, sd_p,
    sgx_b, sgx_c, sgx_h, sgx_w,
    KSIZE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, INDEX: tl.constexpr,
):
    """grad_x[b, c, q] = sum over the (output pixel p, tap t) whose window covers input pixel q of
    sum_m D[b, m, t, p] gz[b, m, c, p]: a gather per input tile, each value written once (no atomics)."""
    batch = tl.program_id(2).to(tl.int64)
    q = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(INDEX)
    q_ok = q < in_pixels
    c = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(INDEX)
    c_ok = c < channels
    # Padded coordinates of each input pixel: tap (u, v) of output pixel (i, j) reads (i*s + u*d, j*s + v*d).
    row = q // width + padding
    col = q % width + padding
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for u in range(KSIZE):
        # Clamped before // and % so that negative values never reach them (C and numpy round differently).
        i_num = tl.maximum(row - u * dilation, 0)
        i = i_num // stride
        i_ok = (row - u * dilation >= 0) & (i_num % stride == 0) & (i < out_h)
        for v in range(KSIZE):
            j_num = tl.maximum(col - v * dilation, 0)
            j = j_num // stride
            ok = q_ok & i_ok & (col - v * dilation >= 0) & (j_num % stride == 0) & (j < out_w)
            p = i * out_w + j
            atom = d_ptr + batch * sd_b + p * sd_p + (u * KSIZE + v) * sd_t
            gz_tile = gz_ptr + batch * sg_b + p[:, None] * sg_p + c[None, :] * sg_c
            for m in range(num_atoms):
                d = tl.load(atom, mask=ok, other=0.0).to(ACC)
                g = tl.load(gz_tile, mask=ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
                acc += d[:, None] * g
                atom += sd_m
                gz_tile += sg_m
    gx = gx_ptr + batch * sgx_b + ((q // width) * sgx_h + (q % width) * sgx_w)[:, None] + c[None, :] * sgx_c
    tl.store(gx, acc.to(gx_ptr.dtype.element_ty), mask=q_ok[:, None] & c_ok[None, :])


def _interpreted_at_import() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_acda_forward_kernel, InterpretedFunction)


_INTERPRETED = triton is not None and _interpreted_at_import()


def _interpreted() -> bool:
    """Whether Triton runs kernels in its numpy interpreter (decided when triton was imported)."""
    return _INTERPRETED


def available(device: torch.device | str | None = None) -> bool:
    """Whether impl='triton' runs here: on CUDA with Triton compiling, or on CPU under its interpreter."""
    if triton is None:
        return False
    device = torch.device("cuda" if device is None else device)
    if device.type == "cuda":
        return torch.cuda.is_available() and not _interpreted()
    return device.type == "cpu" and _interpreted()


def _require(device: torch.device) -> None:
    if triton is None:
        raise RuntimeError("impl='triton' needs the triton package; use impl='basis'")
    if device.type != "cuda" and not _interpreted():
        raise RuntimeError(
            f"impl='triton' runs on CUDA tensors, got {device.type}; on CPU only under Triton's interpreter "
            "(TRITON_INTERPRET=1 set before triton is imported). Use impl='basis' or 'fused' on CPU."
        )


def _block(count: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(count)))


def _cap(blocks: dict, tile: str, index) -> int:
    """The widest ``tile`` block at this index width: ``blocks[tile + "_64bit"]``, where there is one, for
    64-bit offsets."""
    return blocks.get(f"{tile}_64bit", blocks[tile]) if index == tl.int64 else blocks[tile]


# The largest offset a kernel addresses in 32 bits; beyond it (inside one image: the batch offset is
# always 64-bit) every index is 64-bit. Grid dimension z (the batch) holds at most MAX_GRID_BATCH programs.
INT32_OFFSETS = 2**31 - 1
MAX_GRID_BATCH = 65535
HALF_DOTS = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16} if triton else {}


def _image_span(tensor: torch.Tensor) -> int:
    """The largest element offset inside one image (all dims but the batch)."""
    return sum((size - 1) * abs(step) for size, step in zip(tensor.shape[1:], tensor.stride()[1:]))


def _tiles(blocks: dict, channels: int, index) -> dict:
    """A kernel's tile sizes and warps for ``channels`` (the channels one program loops over) at this index
    width."""
    return dict(BLOCK_P=blocks["pixels"], BLOCK_C=_block(channels, _cap(blocks, "channels", index)),
                num_warps=blocks["warps"])


def _forward_tiles(blocks: dict, group_channels: int, group_outputs: int, index) -> dict:
    """One forward config's tiles, warps and stages for one group's input channels and outputs."""
    return dict(_tiles(blocks, group_channels, index), num_stages=blocks["stages"],
                BLOCK_O=_block(group_outputs, _cap(blocks, "outputs", index)))


FORWARD_TILE_KEYS = ("BLOCK_P", "BLOCK_C", "BLOCK_O", "num_warps", "num_stages")


def _settings(x: torch.Tensor, coefficients: torch.Tensor, kernel_size: int, blocks: dict,
              per_image: list[torch.Tensor], groups: int = 1) -> dict:
    """The forward kernel's compile-time arguments for these operands, tile sizes, per-image tensors and
    groups (its channel and output blocks span one group's C/groups inputs and O/groups outputs)."""
    common = _tile_settings(x, kernel_size, blocks, per_image, channels=coefficients.shape[1])
    tiles = _forward_tiles(blocks, coefficients.shape[1], coefficients.shape[0] // groups, common["INDEX"])
    return dict(common, **_dot_settings(x, coefficients.shape[2]), **tiles)


def _dot_settings(x: torch.Tensor, num_atoms: int) -> dict:
    """The compile-time arguments of the kernels that contract windows with ``tl.dot``: atoms padded to a
    power of two, taps per dot, and the operands.

    The ``tl.dot`` operands: fp16/bf16 inputs' own dtype (their tensor cores, float32 accumulation);
    float32 ones in TF32 exactly when torch allows it for float32 matmuls
    (``torch.backends.cuda.matmul.allow_tf32``, set by ``set_float32_matmul_precision("high")``),
    else exact IEEE float32; float64 in float64.
    """
    if x.dtype == torch.float64:
        operand, precision = tl.float64, "ieee"
    elif x.dtype in HALF_DOTS:
        operand, precision = HALF_DOTS[x.dtype], "ieee"
    else:
        operand, precision = tl.float32, "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    # The interpreter's bf16 tl.dot returns garbage (numpy has no bf16): there the bf16-rounded operands
    # are multiplied in float32, which gives the same products.
    dot = tl.float32 if _interpreted() and operand == tl.bfloat16 else operand
    return dict(ATOMS=triton.next_power_of_2(num_atoms), TAP_BLOCK=TAP_BLOCK, OPERAND=operand, DOT=dot,
                PRECISION=precision)


def _tile_settings(x: torch.Tensor, kernel_size: int, blocks: dict, per_image: list[torch.Tensor],
                   channels: int) -> dict:
    """The compile-time arguments every kernel takes: taps, pixel tiles and tiles of ``channels`` (the
    channels one program loops over), accumulator, index width."""
    index = tl.int64 if max(map(_image_span, per_image)) > INT32_OFFSETS else tl.int32
    return dict(KSIZE=kernel_size, ACC=tl.float64 if x.dtype == torch.float64 else tl.float32, INDEX=index,
                **_tiles(blocks, channels, index))


def _forward_configs(configs, named_args: dict, **constexprs) -> list:
    """autotune's early prune: FORWARD_CONFIGS fitted to this call (blocks no wider than its channels and
    outputs, at its index width's caps), duplicates dropped; one left is launched without benchmarking."""
    fitted = [_forward_tiles(blocks, named_args["group_channels"], named_args["group_outputs"], constexprs["INDEX"])
              for blocks in FORWARD_CONFIGS]
    distinct = {tuple(tiles.items()): tiles for tiles in fitted}.values()
    return [triton.Config({key: tiles[key] for key in ("BLOCK_P", "BLOCK_C", "BLOCK_O")},
                          num_warps=tiles["num_warps"], num_stages=tiles["num_stages"]) for tiles in distinct]


# Keyed on the counts and on every compile-time argument that changes the code (autotune adds the dtypes).
_acda_forward_autotuned = None if triton is None else triton.autotune(
    configs=_forward_configs(None, {"group_channels": 2**20, "group_outputs": 2**20}, INDEX=tl.int32),  # widest
    key=["group_channels", "group_outputs", "pixels", "KSIZE", "ATOMS", "PRECISION", "INDEX", "HAS_BIAS"],
    prune_configs_by={"early_config_prune": _forward_configs},
)(_acda_forward_kernel)


def _batch_chunks(batch: int):
    """Slices of the batch, each at most MAX_GRID_BATCH images: one launch each."""
    return (slice(start, min(start + MAX_GRID_BATCH, batch)) for start in range(0, batch, MAX_GRID_BATCH))


def _accumulator_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _on_device(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _empty_output(x, coefficients, alpha) -> torch.Tensor:
    layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
    shape = (x.shape[0], coefficients.shape[0], alpha.shape[3], alpha.shape[4])
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)


def _operand_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the dots and GEMMs take their operands in: x's for fp16/bf16, else the accumulator's."""
    return x.dtype if x.dtype in HALF_DOTS else _accumulator_dtype(x)


def _atoms(alpha, bases, x) -> torch.Tensor:
    """D (B, m, k*k, Ho*Wo) = alpha . bases, summed in the accumulator dtype and kept in the operand dtype
    (the kernels' dots round it to that anyway); alpha itself (a view) where there are no bases."""
    batch, num_atoms, num_bases = alpha.shape[:3]
    if bases is None:
        return alpha.reshape(batch, num_atoms, num_bases, -1)
    accumulate = _accumulator_dtype(x)
    atoms = torch.einsum("bmkp,kt->bmtp", alpha.flatten(3).to(accumulate), bases.reshape(num_bases, -1).to(accumulate))
    return atoms.to(_operand_dtype(x))


def _geometry(x, alpha) -> tuple:
    """channels, num_atoms, out_w, out_pixels."""
    out_w = alpha.shape[4]
    return x.shape[1], alpha.shape[1], out_w, alpha.shape[3] * out_w


@torch.library.custom_op("acda_lightning::triton_acda", mutates_args=(), device_types=("cuda", "cpu"))
def triton_acda(
    x: torch.Tensor,
    alpha: torch.Tensor,
    bases: torch.Tensor | None,
    coefficients: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int = 1,
) -> torch.Tensor:
    """y[b,o,i,j] = bias[o] + sum_{c,a,t} A[o,c,a] (alpha[b,a,:,i,j] . bases[:,t]) xpad[b,g*C/g+c,window_t(i,j)].

    x (B, C, H, W), alpha (B, m, K, Ho, Wo), bases (K, k, k), fixed (no gradient), or None (alpha
    holds the k*k atom entries), A (O, C/groups, m), bias (O,) or None; output channel o is in group
    g = o // (O/groups) and sums over that group's input channels only; the atoms are every group's.
    y has x's dtype.
    """
    _require(x.device)
    _, num_atoms, out_w, pixels = _geometry(x, alpha)
    group_outputs = coefficients.shape[0] // groups
    atoms = _atoms(alpha, bases, x)
    xpad = F.pad(x, (padding,) * 4)
    y = _empty_output(x, coefficients, alpha)
    settings = _settings(x, coefficients, kernel_size, FORWARD_CONFIGS[0], [xpad, atoms, y], groups)
    autotuned = not _interpreted()  # on a GPU autotune picks the tiles per call, and with them the grid
    if autotuned:
        settings = {key: value for key, value in settings.items() if key not in FORWARD_TILE_KEYS}
    kernel = _acda_forward_autotuned if autotuned else _acda_forward_kernel
    with _on_device(x.device):
        for images in _batch_chunks(x.shape[0]):
            def grid(tiles, count=images.stop - images.start):
                return (triton.cdiv(pixels, tiles["BLOCK_P"]), groups * triton.cdiv(group_outputs, tiles["BLOCK_O"]),
                        count)

            kernel[grid if autotuned else grid(settings)](
                xpad[images], atoms[images], coefficients, y if bias is None else bias, y[images],
                coefficients.shape[1], group_outputs, num_atoms, out_w, pixels, stride, dilation,
                *xpad.stride(), *atoms.stride(), *coefficients.stride(), *y.stride(),
                HAS_BIAS=bias is not None,
                **settings,
            )
    return y


@triton_acda.register_fake
def _(x, alpha, bases, coefficients, bias, kernel_size, stride, padding, dilation, groups=1):
    return _empty_output(x, coefficients, alpha)


@torch.library.custom_op("acda_lightning::triton_acda_backward", mutates_args=(), device_types=("cuda", "cpu"))
def triton_acda_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
    bases: torch.Tensor | None,
    coefficients: torch.Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    need_grad_x: bool,
    need_grad_alpha: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_alpha, grad_A) of ``triton_acda`` (the bias's gradient is grad summed, outside); a
    gradient not needed is an empty tensor and is not computed. Groups enter only the two GEMMs: the
    responses z and gz are per input channel, so the kernels, which sum over channels, are every group's."""
    _require(x.device)
    channels, num_atoms, out_w, pixels = _geometry(x, alpha)
    batch, _, height, width = x.shape
    accumulate = _accumulator_dtype(x)
    atoms = _atoms(alpha, bases, x)
    xpad = F.pad(x, (padding,) * 4)
    # The two GEMMs run in torch (cuBLAS: fp16/bf16 tensor cores for those inputs, TF32 for float32 as torch
    # allows), on z and gz stored in that dtype; the kernels do the per-pixel work, accumulating in ACC.
    gemm_dtype = _operand_dtype(x)
    # Per group g: gy (B, g, O/g, P) and A (g, O/g, C/g, m); gz[b, m, c, p] sums over c's group's outputs only.
    grad_y = grad.flatten(2).to(gemm_dtype).unflatten(1, (groups, -1))
    grouped_coefficients = coefficients.to(gemm_dtype).unflatten(0, (groups, -1))
    responses = torch.empty(batch, num_atoms, channels, pixels, dtype=gemm_dtype, device=x.device)
    grad_responses = torch.einsum("bgop,gocm->bmgcp", grad_y, grouped_coefficients).flatten(2, 3)
    grad_atoms = torch.empty(atoms.shape if need_grad_alpha else (0,), dtype=accumulate, device=x.device)
    grad_x = torch.empty_like(x) if need_grad_x else x.new_empty(0)
    per_image = [xpad, atoms, responses, grad_responses]
    settings = _tile_settings(x, kernel_size, BACKWARD_BLOCKS, per_image, channels)
    dots = _dot_settings(x, num_atoms)
    gather = _tile_settings(x, kernel_size, INPUT_GRAD_BLOCKS, per_image, channels)
    pixel_tiles = triton.cdiv(pixels, settings["BLOCK_P"])
    gather_tiles = (triton.cdiv(height * width, gather["BLOCK_P"]), triton.cdiv(channels, gather["BLOCK_C"]))
    with _on_device(x.device):
        for images in _batch_chunks(batch):
            count = images.stop - images.start
            _acda_responses_kernel[(pixel_tiles, triton.cdiv(channels, settings["BLOCK_C"]), count)](
                xpad[images], atoms[images], responses[images],
                channels, num_atoms, out_w, pixels, stride, dilation,
                *xpad.stride(), *atoms.stride(), *responses.stride(),
                **settings, **dots,
            )
            if need_grad_alpha:
                _acda_atom_grad_kernel[(pixel_tiles, 1, count)](
                    xpad[images], grad_responses[images], grad_atoms[images],
                    channels, num_atoms, out_w, pixels, stride, dilation,
                    *xpad.stride(), *grad_responses.stride(), *grad_atoms.stride(),
                    **settings, **dots,
                )
            if need_grad_x:
                _acda_input_grad_kernel[(*gather_tiles, count)](
                    grad_responses[images], atoms[images], grad_x[images],
                    channels, num_atoms, width, height * width, alpha.shape[3], out_w, padding, stride, dilation,
                    *grad_responses.stride(), *atoms.stride(), *grad_x.stride(),
                    **gather,
                )
    grad_coefficients = torch.einsum("bgop,bmgcp->gocm", grad_y, responses.unflatten(2, (groups, -1)))
    grad_coefficients = grad_coefficients.flatten(0, 1).to(coefficients.dtype)
    if not need_grad_alpha:
        return grad_x, alpha.new_empty(0), grad_coefficients
    if bases is not None:  # grad_alpha = grad_D . bases^T
        grad_atoms = torch.einsum("bmtp,kt->bmkp", grad_atoms, bases.reshape(bases.shape[0], -1).to(accumulate))
    grad_alpha = torch.empty_like(alpha).copy_(grad_atoms.reshape(alpha.shape))
    return grad_x, grad_alpha, grad_coefficients


@triton_acda_backward.register_fake
def _(grad, x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups, need_grad_x,
      need_grad_alpha):
    return (torch.empty_like(x) if need_grad_x else x.new_empty(0),
            torch.empty_like(alpha) if need_grad_alpha else alpha.new_empty(0), torch.empty_like(coefficients))


def _setup_context(ctx, inputs, output):
    x, alpha, bases, coefficients, bias, *geometry = inputs
    ctx.save_for_backward(x, alpha, bases, coefficients)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.geometry = geometry


def _backward(ctx, grad):
    x, alpha, bases, coefficients = ctx.saved_tensors
    need_x, need_alpha = ctx.needs_input_grad[:2]
    grad_x, grad_alpha, grad_coefficients = triton_acda_backward(grad, x, alpha, bases, coefficients, *ctx.geometry,
                                                                 need_x, need_alpha)
    grad_bias = None
    if ctx.bias_dtype is not None:
        grad_bias = grad.sum((0, 2, 3), dtype=torch.promote_types(grad.dtype, torch.float32)).to(ctx.bias_dtype)
    return (grad_x if need_x else None, grad_alpha if need_alpha else None, None, grad_coefficients, grad_bias,
            *(None,) * len(ctx.geometry))


triton_acda.register_autograd(_backward, setup_context=_setup_context)


def acda_triton(x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size, groups=1):
    """The ``impl`` entry point: computed in float32 registers, returned in x's (or autocast's) dtype."""
    output_dtype = result_dtype(x, alpha)
    with autocast_disabled(x.device.type):
        return triton_acda(x.to(output_dtype), alpha, bases, coefficients, bias, kernel_size, stride, padding, dilation,
                           groups)
