"""Paired training transforms for restoration (BasicSR style): one random crop and one flip/rotation for input and target.

Images are CHW tensors. ``scale`` is the target/input size ratio: the RealSR v3 factor when the
low-resolution image is genuinely small, 1 for RealSR v1/v2 (LR stored at HR size) and for denoising.
"""

from __future__ import annotations

import torch


def paired_random_crop(
    target: torch.Tensor, source: torch.Tensor, target_patch: int, scale: int = 1, name: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop a ``target_patch`` square of ``target`` and the ``target_patch // scale`` square of ``source`` under it.

    The source patch's top-left corner (i, j) maps to (i * scale, j * scale) in the target, so the
    two patches show the same scene area. ``name`` (the file) is quoted in every error.
    """
    label = f"{name}: " if name else ""
    if target_patch % scale:
        raise ValueError(f"{label}patch size {target_patch} is not a multiple of the scale {scale}")
    source_height, source_width = source.shape[-2:]
    if tuple(target.shape[-2:]) != (source_height * scale, source_width * scale):
        raise ValueError(
            f"{label}target {tuple(target.shape[-2:])} is not {scale}x the input {tuple(source.shape[-2:])}"
        )
    source_patch = target_patch // scale
    if source_height < source_patch or source_width < source_patch:
        raise ValueError(
            f"{label}input {tuple(source.shape[-2:])} is smaller than the {source_patch}x{source_patch} patch; "
            "lower the patch size"
        )
    top = int(torch.randint(source_height - source_patch + 1, ()))
    left = int(torch.randint(source_width - source_patch + 1, ()))
    source = source[..., top : top + source_patch, left : left + source_patch]
    target = target[..., top * scale : (top + source_patch) * scale, left * scale : (left + source_patch) * scale]
    return target, source


def augment(images: list[torch.Tensor], hflip: bool = True, rotation: bool = True) -> list[torch.Tensor]:
    """One random draw of horizontal flip, vertical flip and transpose (with them, all 8 90-degree
    rotations/reflections), applied identically to every image."""
    flip_h = hflip and bool(torch.rand(()) < 0.5)
    flip_v = rotation and bool(torch.rand(()) < 0.5)
    transpose = rotation and bool(torch.rand(()) < 0.5)
    out = []
    for image in images:
        if flip_h:
            image = image.flip(-1)
        if flip_v:
            image = image.flip(-2)
        if transpose:
            image = image.transpose(-2, -1)
        out.append(image.contiguous())
    return out
