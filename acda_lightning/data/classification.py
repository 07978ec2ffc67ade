"""Image classification data (paper Sec. 4.1): CIFAR-10/100 in torchvision's pickled format, ImageNet as folders.

CIFAR is read by ``torchvision.datasets.CIFAR10/100`` (never downloading); ImageNet by
``torchvision.datasets.ImageFolder`` over ``train/<wnid>/`` and ``val/<wnid>/``. Samples are
``(image, label)`` with images float32 in [0, 1], CHW (the task module normalises).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from ..utils import atomic_path
from .base import TaskDataModule
from .images import IMAGE_SUFFIXES, ImageAs, PredictFolder, open_rgb
from .synth import register_synth

SYNTH_HINT = "write a small synthetic set with `acda data synth cls --out data`"


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the md5 check, so any file in the official pickle format loads
    (the synthetic set included); ``verify_checksums=True`` uses torchvision's checked class instead."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _CIFAR100Files(datasets.CIFAR100):
    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


# name -> (torchvision class, class reading any file of that format, number of classes, label key)
CIFAR = {
    "cifar10": (datasets.CIFAR10, _CIFAR10Files, 10, "labels"),
    "cifar100": (datasets.CIFAR100, _CIFAR100Files, 100, "fine_labels"),
}
DATASETS = (*CIFAR, "imagenet")
DEFAULT_ROOTS = {"cifar10": "data/CIFAR", "cifar100": "data/CIFAR", "imagenet": "data/ImageNet"}


def _cifar_layout(dataset: str) -> str:
    checked = CIFAR[dataset][0]
    files = [name for name, _ in checked.train_list + checked.test_list] + [checked.meta["filename"]]
    return f"ROOT/{checked.base_folder}/{{{', '.join(files)}}} (torchvision's python-pickle CIFAR)"


def check_cifar(root: Path, dataset: str) -> None:
    """One clear error when a CIFAR file is missing: the path, the expected layout, how to get it."""
    checked = CIFAR[dataset][0]
    folder = root / checked.base_folder
    for name in [name for name, _ in checked.train_list + checked.test_list] + [checked.meta["filename"]]:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{dataset}: {folder / name} is missing. Expected {_cifar_layout(dataset)} with ROOT={root}. "
                f"Extract the python version from https://www.cs.toronto.edu/~kriz/cifar.html into {root}, or {SYNTH_HINT}"
            )


def check_image_folders(root: Path) -> list[str]:
    """The class names (wnids) of ROOT/train and ROOT/val, which must agree; one clear error otherwise."""
    layout = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (ImageNet's folders, val sorted into class folders)"
    classes = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"imagenet: {folder} is missing. Expected {layout} with ROOT={root}; {SYNTH_HINT}")
        classes[split] = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes[split]:
            raise FileNotFoundError(f"imagenet: {folder} has no class folders. Expected {layout}; {SYNTH_HINT}")
    if classes["train"] != classes["val"]:
        different = sorted(set(classes["train"]) ^ set(classes["val"]))
        raise ValueError(f"imagenet: {root}/train and {root}/val hold different class folders (e.g. {different[:5]})")
    return classes["train"]


class _Named(Dataset):
    """A labelled split served as ``{"image", "label", "name"}`` for ``predict``."""

    def __init__(self, dataset: Dataset, prefix: str):
        self.dataset, self.prefix = dataset, prefix

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        image, label = self.dataset[index]
        return {"image": image, "label": label, "name": f"{self.prefix}_{index:06d}"}


class ClassificationDataModule(TaskDataModule):
    """CIFAR-10, CIFAR-100 or ImageNet (``dataset``) from ``root`` in the official layout.

    CIFAR: train on the 50k training images (random crop with 4 px padding + flip), validate and
    test on the 10k test images (the paper reports test error). ImageNet: train on ``train/``
    (RandomResizedCrop ``crop_size`` + flip), validate and test on ``val/`` (resize to
    ``crop_size * 256/224``, centre crop). Predict: the test split, or the images in ``predict_root``.
    ``num_classes`` and ``classes`` are known after ``setup``.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        root: str | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        crop_size: int = 224,
        predict_root: str | None = None,
        verify_checksums: bool = False,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        self.root = Path(root or DEFAULT_ROOTS[dataset])
        self.num_classes: int | None = None
        self.classes: list[str] = []

    def _transforms(self) -> tuple:
        if self.hparams.dataset in CIFAR:
            train = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
            evaluation = [transforms.Resize(32), transforms.CenterCrop(32)]  # identity on CIFAR's 32x32 images
        else:
            crop = self.hparams.crop_size
            train = [transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip()]
            evaluation = [transforms.Resize(round(crop * 256 / 224)), transforms.CenterCrop(crop)]
        return transforms.Compose([*train, transforms.ToTensor()]), transforms.Compose([*evaluation, transforms.ToTensor()])

    def setup(self, stage: str | None = None) -> None:
        train_transform, eval_transform = self._transforms()
        dataset = self.hparams.dataset
        if dataset in CIFAR:
            check_cifar(self.root, dataset)
            checked, unchecked, self.num_classes, _ = CIFAR[dataset]
            reader = checked if self.hparams.verify_checksums else unchecked
            try:
                self.train_set = reader(self.root, train=True, transform=train_transform, download=False)
                self.eval_set = reader(self.root, train=False, transform=eval_transform, download=False)
            except RuntimeError as error:  # only the md5 check raises here: the files exist
                raise ValueError(f"{dataset}: {self.root} fails torchvision's checksum check ({error}); "
                                 "re-extract the official archive or pass verify_checksums=false") from error
            self.classes = list(self.train_set.classes)
        else:
            self.classes = check_image_folders(self.root)
            self.num_classes = len(self.classes)
            # allow_empty: a class folder without images is allowed (the synthetic set fills only a few)
            self.train_set = datasets.ImageFolder(self.root / "train", train_transform, loader=open_rgb, allow_empty=True)
            self.eval_set = datasets.ImageFolder(self.root / "val", eval_transform, loader=open_rgb, allow_empty=True)
            for split, folder_set in (("train", self.train_set), ("val", self.eval_set)):
                if not len(folder_set):
                    raise FileNotFoundError(f"imagenet: {self.root / split} holds no {'/'.join(IMAGE_SUFFIXES)} images; {SYNTH_HINT}")
        if self.hparams.predict_root:
            self.predict_set = PredictFolder(self.hparams.predict_root, ImageAs("image", eval_transform))
        else:
            self.predict_set = _Named(self.eval_set, "val" if dataset == "imagenet" else "test")

    def _split_loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        batches = -(-len(dataset) // self.hparams.batch_size)
        # Workers overlap loading the next batch with computing this one: a single batch gains nothing
        # from a worker process, and more workers than batches would only idle.
        return self._loader(
            dataset,
            shuffle=shuffle,
            num_workers=min(self.hparams.num_workers, batches - 1),
            drop_last=shuffle and len(dataset) > self.hparams.batch_size,  # no tiny last batch for BatchNorm
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._split_loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._split_loader(self.eval_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._split_loader(self.eval_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._split_loader(self.predict_set, shuffle=False)


# --- synthetic data: learnable classes (each a colour and a shape), in the official formats ----------------

SYNTH_CIFAR_PER_BATCH = 20  # images per CIFAR-10 data batch file (5 files); CIFAR-100 gets as many in total
# ImageNet's 1000 class folders (placeholder wnids) so the 1000-way configs run on it; only the first
# few hold images, keeping a 224x224 training step of the big Ad-ResNets on a CPU to a handful of images.
SYNTH_IMAGENET_WNIDS = tuple(f"n{index:08d}" for index in range(1000))
SYNTH_IMAGENET_FILLED = 2
SYNTH_IMAGENET_SIZE = 48


def synthetic_image(label: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 uint8 image of class ``label``: a shape (disc, square, bar, ring) in a class colour on noise."""
    yy, xx = np.mgrid[:size, :size]
    radius = rng.uniform(0.22, 0.32) * size
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    distance = np.hypot(yy - cy, xx - cx)
    chebyshev = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
    masks = (
        distance < radius,
        chebyshev < radius,
        np.abs(yy - cy) < radius / 3,
        np.abs(distance - radius) < size / 12,
    )
    mask = masks[label % len(masks)]
    hue = label / num_classes
    colour = 255 * (0.5 + 0.5 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3]))))
    image = rng.normal(90, 25, (size, size, 3))
    image[mask] = colour + rng.normal(0, 10, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def _cifar_images(labels: list[int], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 rows, channel-major as in the CIFAR pickles."""
    return np.stack([synthetic_image(label, num_classes, 32, rng).transpose(2, 0, 1).reshape(-1) for label in labels])


def _write_pickle(path: Path, content: dict) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(content, handle)
    return path


def write_synthetic_cifar(root: Path, dataset: str, rng: np.random.Generator) -> list[Path]:
    """The CIFAR batch files of ``dataset`` under ``root/<base folder>``, each labels cycling over every class."""
    checked, _, num_classes, label_key = CIFAR[dataset]
    folder = root / checked.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    train_files = [name for name, _ in checked.train_list]
    per_file = max(SYNTH_CIFAR_PER_BATCH, num_classes // len(train_files))
    written = []
    for index, name in enumerate(train_files + [checked.test_list[0][0]]):
        labels = [(index * per_file + i) % num_classes for i in range(per_file)]
        written.append(
            _write_pickle(folder / name, {"data": _cifar_images(labels, num_classes, rng), label_key: labels, "batch_label": name})
        )
    names = [f"class_{i:03d}" for i in range(num_classes)]
    written.append(_write_pickle(folder / checked.meta["filename"], {checked.meta["key"]: names}))
    return written


def write_synthetic_imagenet(root: Path, rng: np.random.Generator, filled: int = SYNTH_IMAGENET_FILLED) -> list[Path]:
    """ROOT/{train,val}/<wnid>/ for 1000 wnids, one small real JPEG in each of the first ``filled``."""
    written = []
    for split in ("train", "val"):
        for label, wnid in enumerate(SYNTH_IMAGENET_WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            if label >= filled:
                continue
            path = folder / f"{wnid}_{split}.JPEG"
            image = synthetic_image(label, filled, SYNTH_IMAGENET_SIZE, rng)
            with atomic_path(path) as tmp:
                Image.fromarray(image).save(tmp, format="JPEG", quality=90)
            written.append(path)
    return written


@register_synth("classification", "cls")
def synth_classification(out: Path, seed: int) -> list[Path]:
    """CIFAR-10 and CIFAR-100 pickles under OUT/CIFAR/, an ImageNet-style JPEG tree under OUT/ImageNet/."""
    rng = np.random.default_rng(seed)
    return [
        *write_synthetic_cifar(out / "CIFAR", "cifar10", rng),
        *write_synthetic_cifar(out / "CIFAR", "cifar100", rng),
        *write_synthetic_imagenet(out / "ImageNet", rng),
    ]
