"""Crowd density maps: Gaussian kernels at head points, renormalised at the border, cached in h5."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate1d
from scipy.spatial import cKDTree

from ..utils import atomic_path

# Kernels reach this many sigmas: the mass beyond is < 3e-5 and the clipped kernel is renormalised anyway.
KERNEL_RADIUS_SIGMAS = 4.0


def points_inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the (x, y) points (0-based, pixel centres at integers) whose nearest pixel is in the image."""
    height, width = shape
    columns, rows = np.rint(points[:, 0]), np.rint(points[:, 1])
    return (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)


def _gaussian_1d(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(KERNEL_RADIUS_SIGMAS * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _mass_inside(kernel: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """The part of a 1-D kernel centred at each integer position that falls on [0, size)."""
    radius = len(kernel) // 2
    cumulative = np.concatenate([[0.0], np.cumsum(kernel)])
    first = np.clip(-(centres - radius), 0, len(kernel))  # kernel taps before pixel 0 are cut
    last = np.clip(size - (centres - radius), 0, len(kernel))
    return cumulative[last] - cumulative[first]


def _fixed_density(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """One separable Gaussian per point; each impulse is pre-scaled by 1/(kernel mass inside the image).

    The Gaussian is separable, so a clipped kernel's mass is the product of its two clipped 1-D
    masses; scaling each point's impulse by the inverse makes every kernel sum to exactly 1 after
    the (linear) convolution, at the cost of one separable filter over the whole map.
    """
    kernel = _gaussian_1d(sigma)
    impulses = np.zeros(shape, np.float64)
    weights = 1.0 / (_mass_inside(kernel, rows, shape[0]) * _mass_inside(kernel, columns, shape[1]))
    np.add.at(impulses, (rows, columns), weights)
    density = correlate1d(impulses, kernel, axis=0, mode="constant")
    return correlate1d(density, kernel, axis=1, mode="constant")


def _adaptive_sigmas(points: np.ndarray, neighbours: int, beta: float, sigma: float) -> np.ndarray:
    """Geometry-adaptive sigma (Zhang et al., MCNN 2016): beta x mean distance to the k nearest heads."""
    if len(points) <= neighbours:
        return np.full(len(points), sigma)
    distances, _ = cKDTree(points).query(points, k=neighbours + 1)
    return np.maximum(beta * distances[:, 1:].mean(axis=1), 0.5)


def gaussian_density(
    points: np.ndarray,
    shape: tuple[int, int],
    sigma: float = 4.0,
    adaptive: bool = False,
    neighbours: int = 3,
    beta: float = 0.3,
) -> np.ndarray:
    """A float32 (H, W) density map whose sum is the number of ``points`` inside the image.

    ``points``: (N, 2) x, y in 0-based pixel coordinates (pixel centres at integers); a point
    belongs to the pixel nearest to it and points outside the image are ignored. Each head gets
    a Gaussian of std ``sigma`` px (the paper's fixed-size kernel) or, with ``adaptive``,
    ``beta`` x the mean distance to its ``neighbours`` nearest heads; every kernel is clipped at
    the border and renormalised, so heads at edges and corners still count exactly 1.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    points = np.asarray(points, np.float64).reshape(-1, 2)
    points = points[points_inside(points, shape)]
    columns, rows = np.rint(points[:, 0]).astype(np.int64), np.rint(points[:, 1]).astype(np.int64)
    if not adaptive:
        return _fixed_density(rows, columns, shape, sigma).astype(np.float32)
    density = np.zeros(shape, np.float64)
    for row, column, point_sigma in zip(rows, columns, _adaptive_sigmas(points, neighbours, beta, sigma)):
        _add_kernel(density, int(row), int(column), _gaussian_1d(float(point_sigma)))
    return density.astype(np.float32)


def _add_kernel(density: np.ndarray, row: int, column: int, kernel: np.ndarray) -> None:
    """Add one head's separable kernel, clipped to the map and renormalised, within its own window."""
    radius = len(kernel) // 2
    top, bottom = max(0, row - radius), min(density.shape[0], row + radius + 1)
    left, right = max(0, column - radius), min(density.shape[1], column + radius + 1)
    patch = np.outer(kernel[top - row + radius : bottom - row + radius], kernel[left - column + radius : right - column + radius])
    density[top:bottom, left:right] += patch / patch.sum()


def sum_pool(density: np.ndarray, factor: int) -> np.ndarray:
    """Down-sample a (..., H, W) map by summing factor x factor blocks: the count is kept exactly.

    H and W must be multiples of ``factor`` (the data module pads to the network's output stride).
    """
    if factor == 1:
        return density
    *lead, height, width = density.shape
    if height % factor or width % factor:
        raise ValueError(f"density of size {height}x{width} is not a multiple of the down-sampling factor {factor}")
    return density.reshape(*lead, height // factor, factor, width // factor, factor).sum(axis=(-3, -1))


def density_key(annotation: Path, shape: tuple[int, int], **settings) -> str:
    """What a cached map depends on: the annotation file's bytes, the map size and the kernel settings."""
    digest = hashlib.sha1(annotation.read_bytes()).hexdigest()
    options = ",".join(f"{name}={settings[name]}" for name in sorted(settings))
    return f"{digest}|{shape[0]}x{shape[1]}|{options}"


def cached_density(cache_file: Path, key: str, compute) -> np.ndarray:
    """The ``density`` dataset of ``cache_file`` if its ``key`` attribute matches, else ``compute()`` written atomically.

    The file is renamed into place only once complete, so a crash never leaves a half-written
    cache behind; a cache that cannot be read (truncated, foreign) is rebuilt.
    """
    import h5py

    if cache_file.is_file():
        try:
            with h5py.File(cache_file, "r") as handle:
                if handle.attrs.get("key") == key:
                    return handle["density"][()]
        except (OSError, KeyError):
            pass  # unreadable or incomplete: rebuild below
    density = compute()
    with atomic_path(cache_file) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("density", data=density, compression="gzip", compression_opts=1)
            handle.attrs["key"] = key
    return density
