"""Image files for every task: reading (RGB whatever the file's mode, one clear error for a broken file),
8-bit quantisation, atomic PNG writing, and the folder of images ``acda predict`` runs on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..utils import atomic_path

# The formats every task's reader (PIL, through ``open_rgb``) decodes; matched case-insensitively.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_rgb(path: str | Path) -> Image.Image:
    """The image as an RGB PIL image (grayscale and palette files converted); a corrupt or non-image
    file raises one ValueError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read image {path} ({error}); the file is corrupt or not an image: replace or delete it"
        ) from error


def read_rgb(path: str | Path) -> np.ndarray:
    """The image as an (H, W, 3) uint8 array (see ``open_rgb``)."""
    return np.asarray(open_rgb(path))


def to_tensor(image: np.ndarray | Image.Image) -> torch.Tensor:
    """An (H, W, 3) uint8 image as a (3, H, W) float32 tensor in [0, 1]."""
    array = np.asarray(image)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a (3, H, W) float32 tensor in [0, 1]; an unreadable file is one error naming it."""
    return to_tensor(read_rgb(path))


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels an 8-bit PNG holds: restored images are scored as the
    files they are saved as."""
    return image.clamp(0, 1).mul(255).round().div(255)


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    """Save a (3, H, W) tensor in [0, 1] or an (H, W, 3) uint8 array as an 8-bit PNG, atomically."""
    if isinstance(image, torch.Tensor):
        image = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


class PredictFolder(Dataset):
    """Every image of a folder (``IMAGE_SUFFIXES``), for ``acda predict``: ``{**make_sample(image), "name": stem}``.

    Each image is decoded once when the folder is opened, so an unreadable file is reported by name
    (``failed``: file name -> cause) and the readable ones are still predicted; files of other types
    are listed in ``skipped``. ``make_sample`` turns the RGB PIL image into the task's input sample.
    """

    def __init__(self, root: str | Path, make_sample: Callable[[Image.Image], dict]):
        self.root, self.make_sample = Path(root), make_sample
        if not self.root.is_dir():
            raise FileNotFoundError(f"predict folder {self.root} does not exist; point --data.predict_root at a folder of images")
        files = sorted(p for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))
        candidates = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        self.skipped = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        self.failed: dict[str, str] = {}
        self.paths: list[Path] = []
        for path in candidates:
            try:
                open_rgb(path)
            except ValueError as error:
                self.failed[path.name] = str(error.__cause__ or error)
            else:
                self.paths.append(path)
        stems = [p.stem for p in self.paths]
        # photo.png and photo.jpg would write the same output files: such images keep their suffix in the name
        self.names = [p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_") for p in self.paths]
        if not candidates:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in predict folder {self.root}")
        if not self.paths:
            raise ValueError(f"none of the {len(candidates)} images in {self.root} can be read: {self.failure_summary()}")

    def failure_summary(self) -> str:
        return "; ".join(f"{name} ({cause})" for name, cause in self.failed.items())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {**self.make_sample(open_rgb(self.paths[index])), "name": self.names[index]}


class ImageAs:
    """``make_sample`` for ``PredictFolder``: ``{key: transform(image)}``, by default the image as a (3, H, W)
    tensor in [0, 1]."""

    def __init__(self, key: str, transform: Callable[[Image.Image], object] = to_tensor):
        self.key, self.transform = key, transform

    def __call__(self, image: Image.Image) -> dict:
        return {self.key: self.transform(image)}
