"""Fourier-Bessel filter bases (DCFNet, Qiu et al. 2018), single- and multi-scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from scipy import special

MAX_ANGULAR_ORDER = 15


def _check_kernel_size(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(
            f"Fourier-Bessel bases need an odd kernel_size >= 3, got {kernel_size!r}; "
            "use bases=None for even kernels"
        )


@lru_cache(maxsize=None)
def fourier_bessel_elements(kernel_size: int) -> tuple[np.ndarray, float]:
    """All kept elements of one scale, (n, k, k) float64, and the DCFNet normaliser c they were divided by."""
    half = kernel_size // 2  # L1
    grid_half = half + 1  # L: the grid carries one extra ring that is cropped afterwards
    radius = half + 0.5  # R
    truncation = 2.0 if half < 2 else 1.5
    coords = np.arange(-grid_half, grid_half + 1) / radius
    cols, rows = np.meshgrid(coords, coords)  # cols varies along the last axis
    r = np.hypot(rows, cols)
    # DCFNet measures the angle with the row axis as "x": theta = atan2(col, row).
    theta = np.arctan2(cols, rows)

    # (order n, root index q, zero R_nq) for every pair whose next zero is within the cutoff.
    cutoff = math.pi * radius * truncation
    pairs = []
    for n in range(MAX_ANGULAR_ORDER + 1):
        zeros = special.jn_zeros(n, int(cutoff) + 2)
        for q in range(1, len(zeros)):
            if zeros[q] <= cutoff:  # zeros[q] is R_{n,q+1}
                pairs.append((zeros[q - 1], n, q))
    pairs.sort()

    elements = []
    for zero, n, _ in pairs:
        radial = special.jv(n, zero * r) / abs(special.jv(n + 1, zero))
        radial[r >= 1] = 0.0
        if n == 0:
            elements.append(radial)
        else:
            elements.append(math.sqrt(2) * radial * np.cos(n * theta))
            elements.append(math.sqrt(2) * radial * np.sin(n * theta))
    psi = np.stack(elements)[: kernel_size * kernel_size - 1, 1:-1, 1:-1]
    scale = math.sqrt(np.mean(np.sum(psi**2, axis=(1, 2))))
    return psi / scale, scale


def fourier_bessel_bases(kernel_size: int, num_bases: int = 6) -> torch.Tensor:
    """The first ``num_bases`` Fourier-Bessel elements of size ``kernel_size``: (num_bases, k, k)."""
    _check_kernel_size(kernel_size)
    elements, _ = fourier_bessel_elements(kernel_size)
    if not 1 <= num_bases <= len(elements):
        raise ValueError(
            f"num_bases must be in [1, {len(elements)}] for kernel_size={kernel_size}, got {num_bases}"
        )
    return torch.from_numpy(elements[:num_bases].astype(np.float32))


def default_scales(kernel_size: int) -> tuple[int, ...]:
    """(3, 5, ..., kernel_size): one scale per odd size up to the kernel."""
    _check_kernel_size(kernel_size)
    return tuple(range(3, kernel_size + 1, 2))


def multiscale_fourier_bessel_bases(
    kernel_size: int, bases_per_scale: int = 6, scales: Sequence[int] | None = None
) -> torch.Tensor:
    """Bases of every scale, smaller ones zero-padded to the centre: (S * bases_per_scale, k, k)."""
    scales = default_scales(kernel_size) if scales is None else tuple(sorted(scales))
    if not scales:
        raise ValueError("scales must name at least one kernel size")
    for size in scales:
        _check_kernel_size(size)
        if size > kernel_size:
            raise ValueError(f"scale {size} is larger than kernel_size={kernel_size}")
    blocks = []
    for size in scales:
        pad = (kernel_size - size) // 2
        blocks.append(torch.nn.functional.pad(fourier_bessel_bases(size, bases_per_scale), (pad,) * 4))
    return torch.cat(blocks)
