"""RealSR (Cai et al., ICCV 2019) in its official layout, its LightningDataModule and a synthetic stand-in writer.

Layout: ``root/{Canon,Nikon}/{Train,Test}/{2,3,4}/<name>_HR.png`` with ``<name>_LR{scale}.png``.
Version v1/v2 ("RealSR 2019") stores the LR image bicubically upsampled to the HR size; v3
("RealSR final") stores it genuinely small (HR size / scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from .base import TaskDataModule
from .images import ImageAs, PredictFolder, read_image, write_png
from .synth import register_synth
from .transforms import augment, paired_random_crop

CAMERAS = ("Canon", "Nikon")
SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
VERSIONS = ("v1", "v2", "v3")
SYNTH_COMMAND = "acda data synth sr --out data"


def layout_error(root: Path, scale: int, version: str, problem: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"RealSR {version} x{scale}: {problem}. Expected {root}/{{Canon,Nikon}}/{{Train,Test}}/{scale}/<name>_HR.png "
        f"with <name>_LR{scale}.png beside it (the official RealSR layout). For a small synthetic copy run "
        f"`{SYNTH_COMMAND}`."
    )


class RealSR(Dataset):
    """RealSR pairs ``{"lr", "hr", "name"}`` of one scale and split, both cameras, matched by file name.

    Without ``transform`` the whole images are returned; ``transform(sample) -> sample`` crops/augments.
    Sizes are checked on reading: v3 HR must be exactly ``scale`` x LR, v1/v2 LR and HR equal.
    """

    def __init__(self, root: str | Path, scale: int = 4, split: str = "train", version: str = "v3", transform=None):
        if scale not in (2, 3, 4):
            raise ValueError(f"RealSR scale must be 2, 3 or 4, got {scale!r}")
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split must be one of {sorted(SPLIT_FOLDERS)}, got {split!r}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        self.root, self.scale, self.split, self.version, self.transform = Path(root), scale, split, version, transform
        folders = [self.root / camera / SPLIT_FOLDERS[split] / str(scale) for camera in CAMERAS]
        if not any(folder.is_dir() for folder in folders):
            raise layout_error(self.root, scale, version, f"no {SPLIT_FOLDERS[split]}/{scale} folder under {self.root}")
        self.pairs: list[tuple[Path, Path]] = []
        for folder in (f for f in folders if f.is_dir()):
            high = {p.name[: -len("_HR.png")]: p for p in folder.glob("*_HR.png")}
            low = {p.name[: -len(f"_LR{scale}.png")]: p for p in folder.glob(f"*_LR{scale}.png")}
            for name in sorted(high.keys() ^ low.keys()):
                present, absent = (high[name], f"{name}_LR{scale}.png") if name in high else (low[name], f"{name}_HR.png")
                raise FileNotFoundError(f"{present} has no partner {folder / absent}; add it or remove {present.name}")
            self.pairs += [(low[name], high[name]) for name in sorted(high)]
        if not self.pairs:
            raise layout_error(self.root, scale, version, f"no *_HR.png / *_LR{scale}.png pairs in {folders}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        lr_path, hr_path = self.pairs[index]
        lr, hr = read_image(lr_path), read_image(hr_path)
        ratio = self.scale if self.version == "v3" else 1
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * ratio, lr.shape[-1] * ratio):
            expected = f"{self.scale}x its LR" if ratio > 1 else "the size of its LR (RealSR v1/v2 store LR at HR size)"
            raise ValueError(
                f"{hr_path} is {tuple(hr.shape[-2:])}, {lr_path.name} is {tuple(lr.shape[-2:])}: RealSR {self.version} "
                f"HR must be {expected}; check --data.version and --data.scale"
            )
        sample = {"lr": lr, "hr": hr, "name": hr_path.name[: -len("_HR.png")]}
        return self.transform(sample) if self.transform else sample


class PairedPatches:
    """Training transform: a scale-aligned random crop (``patch_size`` on the HR side) plus flips/rotations."""

    def __init__(self, patch_size: int, scale: int):
        self.patch_size, self.scale = patch_size, scale

    def __call__(self, sample: dict) -> dict:
        hr, lr = paired_random_crop(sample["hr"], sample["lr"], self.patch_size, self.scale, name=sample["name"])
        hr, lr = augment([hr, lr])
        return {**sample, "hr": hr, "lr": lr}


class RealSRDataModule(TaskDataModule):
    """Random HR patches of ``patch_size`` (LR patch ``patch_size // scale`` for v3) for training; whole
    images, one per batch, for validation (the last ``val_images`` training pairs, held out), test and predict.

    ``train_repeat`` passes over the training images make one epoch (RealSR has a few hundred images).
    """

    def __init__(
        self,
        root: str | None = None,
        scale: int = 4,
        version: str = "v3",
        patch_size: int = 192,
        batch_size: int = 16,
        num_workers: int = 4,
        val_images: int = 10,
        train_repeat: int = 1,
        predict_root: str | None = None,
    ):
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} must be a multiple of the scale {scale}")
        self.root = Path(root if root is not None else f"data/RealSR_{version}")

    @property
    def validation_split(self) -> str:
        return f"the last {self.hparams.val_images} training pairs, held out of training"

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", "validate", None):
            crop_scale = hp.scale if hp.version == "v3" else 1
            train = RealSR(self.root, hp.scale, "train", hp.version, transform=PairedPatches(hp.patch_size, crop_scale))
            whole = RealSR(self.root, hp.scale, "train", hp.version)
            if not 0 < hp.val_images < len(train):
                raise ValueError(f"val_images={hp.val_images} must leave training images out of the {len(train)} in {self.root}")
            kept = range(len(train) - hp.val_images)
            self.train_set = ConcatDataset([Subset(train, kept)] * hp.train_repeat)
            self.val_set = Subset(whole, range(len(train) - hp.val_images, len(train)))
        if stage in ("test", None) or (stage == "predict" and not hp.predict_root):
            self.test_set = RealSR(self.root, hp.scale, "test", hp.version)
        if stage == "predict":
            self.predict_set = PredictFolder(hp.predict_root, ImageAs("lr")) if hp.predict_root else self.test_set

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1, persistent=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, 1, persistent=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, 1, persistent=False)


# ---- synthetic stand-in: scikit-image's own photographs, degraded non-uniformly ------------------------------

# (camera, split) -> (scikit-image picture, top, left) crop origins on the half-size picture. The test
# crops are four disjoint windows of a photograph no training crop comes from: natural texture like the
# training set's (a synthetic test picture such as the colour wheel, where bicubic reaches 45 dB, would
# dominate a mean PSNR and measure nothing the training set teaches).
SYNTH_CROPS = {
    ("Canon", "Train"): [("astronaut", 0, 0), ("astronaut", 100, 100), ("coffee", 20, 40), ("coffee", 40, 150), ("rocket", 60, 80)],
    ("Nikon", "Train"): [("rocket", 40, 150), ("immunohistochemistry", 0, 0), ("immunohistochemistry", 100, 100), ("astronaut", 100, 0), ("coffee", 60, 0)],
    ("Canon", "Test"): [("chelsea", 0, 0), ("chelsea", 78, 76)],
    ("Nikon", "Test"): [("chelsea", 0, 152), ("chelsea", 78, 152)],
}
SYNTH_SIZES = {"Train": 96, "Test": 72}  # HR sizes, multiples of 2, 3 and 4


def _source_picture(name: str) -> torch.Tensor:
    """A scikit-image picture at half size (antialiased), as (3, H, W) in [0, 1]."""
    from skimage import data as skdata

    array = np.asarray(getattr(skdata, name)(), dtype=np.float32)[..., :3] / 255.0
    image = torch.from_numpy(array).permute(2, 0, 1)[None]
    return F.interpolate(image, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    line = torch.exp(-0.5 * (offsets / sigma) ** 2)
    line = line / line.sum()
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    channels = image.shape[0]
    blurred = F.conv2d(padded, line.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(blurred, line.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


def degrade(hr: torch.Tensor, scale: int, generator: torch.Generator) -> torch.Tensor:
    """A small LR image whose blur and noise vary across it: sharp at the left, blurred and noisier at the right.

    The blur is a per-pixel blend of Gaussians (sigma 0.25 * scale to 0.8 * scale, left to right),
    then area downsampling by ``scale`` and Gaussian noise whose level grows along the diagonal:
    a degradation no single static filter inverts everywhere.
    """
    sigmas = (0.25 * scale, 0.5 * scale, 0.8 * scale)
    blurred = torch.stack([_gaussian_blur(hr, sigma) for sigma in sigmas])  # (3 sigmas, C, H, W)
    width = hr.shape[-1]
    position = torch.linspace(0, len(sigmas) - 1, width)  # fractional sigma index per column
    weights = torch.stack([(1 - (position - i).abs()).clamp(min=0) for i in range(len(sigmas))])  # hat functions
    mixed = (blurred * weights[:, None, None, :]).sum(0)
    lr = F.avg_pool2d(mixed[None], scale)[0]
    rows, cols = torch.meshgrid(torch.linspace(0, 1, lr.shape[-2]), torch.linspace(0, 1, lr.shape[-1]), indexing="ij")
    noise_level = 0.002 + 0.012 * (rows + cols) / 2
    return (lr + noise_level * torch.randn(lr.shape, generator=generator)).clamp(0, 1)


@register_synth("sr", "realsr")
def synth_realsr(out: Path, seed: int) -> list[Path]:
    """OUT/RealSR_v3 and OUT/RealSR_v1 in the official layout, x2/x3/x4, from scikit-image's pictures.

    v3 stores the LR genuinely small; v1 stores the same LR bicubically upsampled to the HR size,
    quantised to 8 bits like the real files.
    """
    generator = torch.Generator().manual_seed(seed)
    pictures: dict[str, torch.Tensor] = {}
    written = []
    for (camera, split), crops in SYNTH_CROPS.items():
        size = SYNTH_SIZES[split]
        for index, (picture, top, left) in enumerate(crops, start=1):
            if picture not in pictures:
                pictures[picture] = _source_picture(picture)
            hr = (pictures[picture][:, top : top + size, left : left + size] * 255).round() / 255
            name = f"{camera}_{index:03d}"
            for scale in (2, 3, 4):
                lr = (degrade(hr, scale, generator) * 255).round() / 255
                lr_at_hr_size = F.interpolate(lr[None], scale_factor=scale, mode="bicubic", align_corners=False)[0]
                for version, low in (("v3", lr), ("v1", lr_at_hr_size)):
                    folder = out / f"RealSR_{version}" / camera / split / str(scale)
                    written.append(write_png(folder / f"{name}_HR.png", hr))
                    written.append(write_png(folder / f"{name}_LR{scale}.png", low))
    return written
