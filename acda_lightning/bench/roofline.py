"""`acda bench roofline`: multiply-adds and bytes moved per kernel, and the time each would take at an
H100's published peaks. A PREDICTION from counting, not a measurement (`make gpu-check` measures).

Setting: Table 6's layer (C = O = 256, 100x100 output, stride 1, m = 6 atoms, K Fourier-Bessel bases:
6/12/18 at k = 3/5/7), bf16 tensors (2 bytes), fp32 accumulation buffers (4 bytes), per batch size.

Counting model, per kernel and pass (forward; backward = every gradient the layer needs):
- multiply-adds split by the unit that runs them: GEMM-shaped work (convs, the 1x1 over C*m, the
  kernels' ``tl.dot``, counted at the padded shapes the dots have) on tensor cores; per-pixel work
  (depthwise taps, the alpha contraction, the Triton input-gradient gather) on CUDA cores.
- bytes: every tensor a kernel reads or writes, once per pass that the design makes over it in DRAM
  (caches assumed to catch re-reads inside one program's tile; re-reads across programs are charged:
  the Triton forward reads x and D once per 128-wide output block, its input-gradient gather D once
  per 256-wide channel block).
- time = max(tensor MACs / tensor peak + CUDA-core MACs / FP32 peak, bytes / DRAM bandwidth).
- "triton" (nn/kernels/triton_acda.py): D = alpha . bases (einsum, kept in bf16) and x padded before
  either pass. Forward: per pixel a batched ``tl.dot`` of its (C x k*k) window with its (k*k x m) atoms
  D, taps padded to a multiple of 16 and atoms to a power of two (64 and 8 at k = 7, m = 6), once per
  128-wide output block, then the 1x1 as a ``tl.dot`` over (channel, padded atom) pairs; A's tiles are
  re-read from L2 by every pixel tile, not counted. Backward: gz = gy . A and grad_A = gy^T z (torch
  GEMMs on z, gz stored in bf16), the responses kernel (the forward's window dot, storing z), the
  atom-gradient kernel (the transposed window dot gz -> grad_D, fp32), the input-gradient gather through
  D (CUDA cores, m*k*k per input value), and grad_alpha = grad_D . bases^T; no atomics. The mma's own
  tile granularity (16 rows, 8 columns) is not modelled beyond these paddings; a batched (3D) ``tl.dot``
  runs on Ampere-style mma, whose H100 throughput is below the wgmma peak used here.
- the atom generator (1x1 C -> 64, BN, ReLU, 3x3 64 -> m*K) is the same for every ACDA kernel: its own row.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from ..nn.bases import default_scales
from ..paper import TABLE6_SETTING

# NVIDIA H100 SXM5 datasheet, dense (no sparsity): FLOP/s (a multiply-add is 2) and HBM3 bytes/s.
H100 = {"name": "H100 SXM5", "tensor_bf16_flops": 989.4e12, "fp32_flops": 66.9e12, "dram_bytes_per_second": 3.35e12}
ELEMENT, ACCUMULATOR = 2, 4  # bytes: a bf16 value, an fp32 value
BASES_PER_SCALE = 6  # the layer's default: 6 Fourier-Bessel bases per odd scale up to the kernel size
GENERATOR_HIDDEN = 64
# as nn/kernels/triton_acda.py's FORWARD_CONFIGS[0]["outputs"], INPUT_GRAD_BLOCKS["channels"] and TAP_BLOCK
TRITON_FORWARD_OUTPUT_BLOCK, TRITON_INPUT_GRAD_CHANNEL_BLOCK, TRITON_TAP_BLOCK = 128, 256, 16
KERNELS = ("conv", "basis", "triton", "generator")


@dataclass
class Work:
    tensor_macs: int = 0
    cuda_core_macs: int = 0
    bytes: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    def seconds(self, peaks: dict = H100) -> float:
        compute = 2 * (self.tensor_macs / peaks["tensor_bf16_flops"] + self.cuda_core_macs / peaks["fp32_flops"])
        memory = self.bytes / peaks["dram_bytes_per_second"]
        return max(compute, memory)


def passes(kernel: str, batch: int, kernel_size: int, channels: int = 256, size: int = 100,
           num_atoms: int = 6) -> dict[str, Work]:
    """{"forward": Work, "backward": Work} of one kernel at this setting."""
    b, c, o, m, taps = batch, channels, channels, num_atoms, kernel_size**2
    bases, pixels = BASES_PER_SCALE * len(default_scales(kernel_size)), size * size
    e, acc = ELEMENT, ACCUMULATOR
    x = y = b * c * pixels  # elements (C = O)
    alpha, atoms = b * m * bases * pixels, b * m * taps * pixels
    responses, atom_out = b * c * bases * pixels, b * c * m * pixels
    gemm = b * o * c * m * pixels  # the 1x1 over C*m, or the kernels' dot
    sums = b * c * m * taps * pixels  # per-pixel responses sum_t D x_t
    if kernel == "conv":
        weights = o * c * taps
        forward = Work(tensor_macs=b * o * c * taps * pixels, bytes=e * (x + weights + y))
        return {"forward": forward, "backward": Work(tensor_macs=2 * forward.tensor_macs,
                                                     bytes=e * (2 * (x + y) + 2 * weights + y))}
    if kernel == "generator":
        hidden, predicted = b * GENERATOR_HIDDEN * pixels, m * bases
        forward = Work(tensor_macs=b * pixels * (c * GENERATOR_HIDDEN + GENERATOR_HIDDEN * predicted * 9),
                       bytes=e * (x + 3 * hidden + alpha))  # hidden: written, normalised in place, read
        return {"forward": forward, "backward": Work(tensor_macs=2 * forward.tensor_macs, bytes=2 * forward.bytes)}
    if kernel == "basis":  # depthwise conv with the K bases, the alpha contraction, the 1x1 conv
        forward = Work(tensor_macs=gemm, cuda_core_macs=responses * taps + atom_out * bases,
                       bytes=e * (x + responses) + e * (responses + alpha + atom_out) + e * (atom_out + y))
        backward = Work(tensor_macs=2 * gemm, cuda_core_macs=2 * atom_out * bases + responses * taps,
                        bytes=e * (y + 2 * atom_out) + e * (atom_out + 2 * responses + 2 * alpha)
                        + e * (responses + x))
        return {"forward": forward, "backward": backward}
    if kernel != "triton":
        raise ValueError(f"unknown kernel {kernel!r}: one of {', '.join(KERNELS)}")
    # D = alpha . bases (einsum, stored in bf16) and x copied padded, before the kernels of either pass.
    prologue = Work(cuda_core_macs=atoms * bases, bytes=e * (alpha + 2 * x + atoms))
    padded_taps = ceil(taps / TRITON_TAP_BLOCK) * TRITON_TAP_BLOCK
    padded_atoms = 1 << (m - 1).bit_length()
    window_dots = b * pixels * c * padded_taps * padded_atoms  # (C x taps) window times (taps x atoms) D
    output_blocks = ceil(o / TRITON_FORWARD_OUTPUT_BLOCK)
    forward = prologue + Work(tensor_macs=output_blocks * window_dots + b * pixels * o * c * padded_atoms,
                              bytes=output_blocks * e * (x + atoms) + e * y)
    channel_blocks = ceil(c / TRITON_INPUT_GRAD_CHANNEL_BLOCK)
    backward = prologue + Work(
        tensor_macs=2 * gemm + 2 * window_dots,  # gz and grad_A GEMMs; responses and atom-gradient dots
        cuda_core_macs=sums + atoms * bases,  # the input-gradient gather; grad_alpha = grad_D . bases^T
        bytes=e * (y + atom_out)  # gz = gy . A
        + e * (x + atoms + atom_out)  # responses kernel: x, D -> z
        + e * (y + atom_out)  # grad_A = gy^T z
        + e * (x + atom_out) + acc * atoms  # atom-gradient kernel: x, gz -> grad_D
        + e * (atom_out + channel_blocks * atoms + x)  # input-gradient gather: gz, D -> grad_x
        + acc * atoms + e * alpha,  # grad_alpha
    )
    return {"forward": forward, "backward": backward}


def roofline(kernel_sizes=(3, 5, 7), batches=(1, 8, 32)) -> dict:
    setting = {**TABLE6_SETTING, "dtype": "bfloat16", "peaks": H100}
    rows = []
    for kernel_size in kernel_sizes:
        for batch in batches:
            works = {kernel: passes(kernel, batch, kernel_size, TABLE6_SETTING["channels"], TABLE6_SETTING["size"],
                                    TABLE6_SETTING["num_atoms"]) for kernel in KERNELS}
            for kernel, work in works.items():
                both = work["forward"] + work["backward"]
                row = {"kernel": kernel, "kernel_size": kernel_size, "batch": batch}
                for name, part in (("forward", work["forward"]), ("forward_backward", both)):
                    row[name] = {**vars(part), "predicted_ms": 1e3 * part.seconds()}
                rows.append(row)
            conv = next(r for r in rows if r["kernel"] == "conv" and (r["kernel_size"], r["batch"]) == (kernel_size, batch))
            generator = rows[-1]
            for row in rows[-len(KERNELS):]:
                if row["kernel"] in ("basis", "triton"):
                    for name in ("forward", "forward_backward"):
                        layer_ms = row[name]["predicted_ms"] + generator[name]["predicted_ms"]
                        row[name]["layer_vs_conv"] = layer_ms / conv[name]["predicted_ms"]
    return {"setting": setting, "rows": rows}


def markdown(result: dict) -> str:
    peaks = result["setting"]["peaks"]
    lines = [
        f"PREDICTED (not measured) at {peaks['name']} peaks: {peaks['tensor_bf16_flops'] / 1e12:.0f} TFLOP/s bf16 "
        f"tensor, {peaks['fp32_flops'] / 1e12:.1f} TFLOP/s FP32, {peaks['dram_bytes_per_second'] / 1e12:.2f} TB/s; "
        "Table 6's layer in bf16. layer/conv = (kernel + generator) / conv.",
        "",
        "| k | B | kernel | fwd GMAC tensor/CUDA-core | fwd MB | fwd ms | fwd+bwd ms | layer/conv fwd+bwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        forward, both = row["forward"], row["forward_backward"]
        ratio = both.get("layer_vs_conv")
        lines.append(
            f"| {row['kernel_size']} | {row['batch']} | {row['kernel']} | {forward['tensor_macs'] / 1e9:.1f}/"
            f"{forward['cuda_core_macs'] / 1e9:.2f} | {forward['bytes'] / 1e6:.0f} | {forward['predicted_ms']:.3f} | "
            f"{both['predicted_ms']:.3f} | {'' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines)
