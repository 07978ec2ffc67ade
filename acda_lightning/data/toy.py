"""The toy pattern-detection data (paper Sec. 3.3, Fig. 6): one seeded noisy map of multi-scale glyphs."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..utils import atomic_path
from .synth import register_synth


def _glyph(shape: str, size: int) -> np.ndarray:
    """A size x size binary glyph; every glyph marks its own centre pixel."""
    glyph = np.zeros((size, size), np.float32)
    mid = size // 2
    if shape == "ring":  # square outline with a centre dot
        glyph[[0, -1], :] = glyph[:, [0, -1]] = 1
    elif shape == "plus":
        glyph[mid, :] = glyph[:, mid] = 1
    elif shape == "cross":
        glyph[np.arange(size), np.arange(size)] = glyph[np.arange(size), size - 1 - np.arange(size)] = 1
    else:
        raise ValueError(f"unknown glyph shape {shape!r}; choose from 'ring', 'plus', 'cross'")
    glyph[mid, mid] = 1
    return glyph


def make_pattern_canvas(
    seed: int,
    size: int = 100,
    shift: int = 20,
    num_patterns: int = 25,
    scales: Sequence[int] = (3, 5, 7),
    shapes: Sequence[str] = ("plus",),
    noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """A (size+shift)^2 noisy canvas and its binary centre map.

    The training map is ``canvas[shift:, shift:]``; the test map shifted down-right by ``shift``
    is ``canvas[:size, :size]`` (same content moved, fresh noise entering at the top-left).
    Glyphs lie wholly inside the training map and never touch one another.
    """
    for scale in scales:
        if scale < 1 or scale % 2 == 0:
            raise ValueError(f"pattern scales must be odd and positive, got {list(scales)}")
    rng = np.random.default_rng(seed)
    extent = size + shift
    canvas = rng.normal(0.0, noise, (extent, extent)).astype(np.float32)
    target = np.zeros((extent, extent), np.float32)
    reach = max(scales) // 2
    min_distance = 2 * reach + 2  # Chebyshev distance: a one-pixel gap between the largest glyphs
    centres: list[np.ndarray] = []
    for _ in range(200 * num_patterns):
        if len(centres) == num_patterns:
            break
        centre = rng.integers(reach, size - reach, 2) + shift
        if all(np.abs(centre - other).max() >= min_distance for other in centres):
            centres.append(centre)
    else:
        raise ValueError(f"cannot place {num_patterns} non-overlapping glyphs of size {max(scales)} on a {size}^2 map")
    for row, col in centres:
        scale = int(rng.choice(scales))
        glyph = _glyph(str(rng.choice(shapes)), scale)
        half = scale // 2
        canvas[row - half : row + half + 1, col - half : col + half + 1] += glyph
        target[row, col] = 1.0
    return canvas, target


class _Repeated(Dataset):
    """One sample served ``length`` times: an epoch is ``length`` SGD steps on the single map."""

    def __init__(self, sample: dict, length: int):
        self.sample, self.length = sample, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.sample


class ToyPatternDataModule(L.LightningDataModule):
    """Train on one seeded map; test on it, on it shifted by ``shift`` px down-right, and on a held-out map.

    Samples are dicts of (1, size, size) float32 maps: ``image``/``target`` (training map),
    ``shifted_image``/``shifted_target`` and ``heldout_image``/``heldout_target``, plus ``shift``.
    """

    def __init__(
        self,
        size: int = 100,
        num_patterns: int = 25,
        scales: Sequence[int] = (3, 5, 7),
        shapes: Sequence[str] = ("plus",),
        noise: float = 0.1,
        shift: int = 20,
        seed: int = 0,
        heldout_seed: int = 1,
        steps_per_epoch: int = 100,
    ):
        super().__init__()
        if not 0 <= shift < size:
            raise ValueError(f"shift must be in [0, size), got shift={shift}, size={size}")
        self.save_hyperparameters()
        self._canvas_kwargs = dict(
            size=size, shift=shift, num_patterns=num_patterns, scales=tuple(scales), shapes=tuple(shapes), noise=noise
        )

    @property
    def validation_split(self) -> str:
        """As ``TaskDataModule.validation_split``; here no checkpoint is chosen on validation (final weights)."""
        return f"a held-out map (seed {self.hparams.heldout_seed}), also reported by test"

    def _maps(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        canvas, target = make_pattern_canvas(seed, **self._canvas_kwargs)
        shift, size = self.hparams.shift, self.hparams.size
        as_map = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
        return (
            as_map(canvas[shift:, shift:]),
            as_map(target[shift:, shift:]),
            as_map(canvas[:size, :size]),
            as_map(target[:size, :size]),
        )

    def setup(self, stage: str | None = None) -> None:
        image, target, shifted_image, shifted_target = self._maps(self.hparams.seed)
        heldout_image, heldout_target, _, _ = self._maps(self.hparams.heldout_seed)
        self.train_sample = {"image": image, "target": target}
        self.test_sample = {
            **self.train_sample,
            "shifted_image": shifted_image,
            "shifted_target": shifted_target,
            "heldout_image": heldout_image,
            "heldout_target": heldout_target,
            "shift": self.hparams.shift,
        }

    def train_dataloader(self) -> DataLoader:
        # Every rank takes steps_per_epoch steps: DDP splits the epoch, so serve world_size times as many.
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(_Repeated(self.train_sample, self.hparams.steps_per_epoch * world_size), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        """The held-out map: ``acda validate`` and the per-epoch val/mse curve."""
        return DataLoader(_Repeated({"image": self.test_sample["heldout_image"], "target": self.test_sample["heldout_target"], "name": "heldout"}, 1), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_Repeated(self.test_sample, 1), batch_size=1)

    def predict_dataloader(self) -> DataLoader:
        """The training, shifted and held-out maps, one named sample each."""
        sample = self.test_sample
        maps = [("train", sample["image"]), ("shifted", sample["shifted_image"]), ("heldout", sample["heldout_image"])]
        return DataLoader([{"image": image, "name": name} for name, image in maps], batch_size=1)


@register_synth("toy")
def synth_toy(out, seed: int) -> list:
    """The toy study's canvas as toy.npz (canvas, target) plus a PNG to look at."""
    from ..plots import image_grid

    canvas, target = make_pattern_canvas(seed)
    arrays = out / "toy.npz"
    with atomic_path(arrays) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, canvas=canvas, target=target)
    picture = out / "toy.png"
    image_grid([[("canvas", canvas), ("centre map", target)]], picture)
    return [arrays, picture]
