"""Reading image files for every dataset: RGB whatever the file's mode, one clear error for a broken file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


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
