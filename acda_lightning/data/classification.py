"""Image classification data (paper Sec. 4.1): CIFAR-10/100 in torchvision's pickled format, ImageNet as folders.

CIFAR's python-pickle batches are read here (as torchvision reads them, never downloading); ImageNet by
``torchvision.datasets.ImageFolder`` over ``train/<wnid>/`` and ``val/<wnid>/``. Samples are
``(image, label)`` with images float32 in [0, 1], CHW (the task module normalises). Validation is
held out of the training images; the test split (CIFAR's test batch, ImageNet's val/) is used only to test.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity

from ..utils import atomic_path
from .base import TaskDataModule
from .images import IMAGE_SUFFIXES, ImageAs, PredictFolder, open_rgb
from .synth import register_synth

SYNTH_HINT = "write a small synthetic set with `acda data synth classification --out data`"


# name -> (torchvision class: the file names and md5 sums of the official archive, number of classes, label key)
CIFAR = {
    "cifar10": (datasets.CIFAR10, 10, "labels"),
    "cifar100": (datasets.CIFAR100, 100, "fine_labels"),
}
DATASETS = (*CIFAR, "imagenet")
DEFAULT_ROOTS = {"cifar10": "data/CIFAR", "cifar100": "data/CIFAR", "imagenet": "data/ImageNet"}


def _cifar_layout(dataset: str) -> str:
    checked = CIFAR[dataset][0]
    files = [name for name, _ in checked.train_list + checked.test_list] + [checked.meta["filename"]]
    return f"ROOT/{checked.base_folder}/{{{', '.join(files)}}} (torchvision's python-pickle CIFAR)"


def _cifar_fix(root: Path) -> str:
    return f"extract the python version from https://www.cs.toronto.edu/~kriz/cifar.html into {root}, or {SYNTH_HINT}"


def check_cifar(root: Path, dataset: str) -> None:
    """One clear error when a CIFAR file is missing: the path, the expected layout, how to get it."""
    checked = CIFAR[dataset][0]
    folder = root / checked.base_folder
    for name in [name for name, _ in checked.train_list + checked.test_list] + [checked.meta["filename"]]:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{dataset}: {folder / name} is missing. Expected {_cifar_layout(dataset)} with ROOT={root}; {_cifar_fix(root)}"
            )


def _str_key(key):
    return key.decode("latin1") if isinstance(key, bytes) else key


def read_cifar_pickle(path: Path, root: Path, keys: tuple[str, ...]) -> dict:
    """One CIFAR pickle (a batch or the meta file) as a dict with ``str`` keys, holding ``keys``.

    The official files are python-2 pickles whose keys are python-2 strings: loaded with
    ``encoding="latin1"``, as torchvision does, they are ``str`` ("data", "labels"); loaded with
    ``encoding="bytes"`` (the CIFAR page's snippet) they are ``bytes``, and a file re-saved after that
    has ``bytes`` keys, which are read the same. A truncated or foreign file, or one without ``keys``,
    is one ValueError naming the file and the fix.
    """
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as error:
        raise ValueError(
            f"cannot read CIFAR file {path} ({error}): it is truncated or not a CIFAR pickle; {_cifar_fix(root)}"
        ) from error
    if not isinstance(entry, dict):
        raise ValueError(f"CIFAR file {path} holds a {type(entry).__name__}, not a dict; {_cifar_fix(root)}")
    entry = {_str_key(key): value for key, value in entry.items()}
    for key in keys:
        if key not in entry:
            raise ValueError(f"CIFAR file {path} has no {key!r} entry (found {sorted(entry)}); {_cifar_fix(root)}")
    return entry


class CIFARImages(Dataset):
    """The images of some CIFAR batch files as ``(PIL image, label)``; ``targets`` their labels, ``classes`` the names."""

    def __init__(self, root: Path, dataset: str, files: list[str], verify_checksums: bool = False):
        checked, _, label_key = CIFAR[dataset]
        folder = root / checked.base_folder
        md5 = dict(checked.train_list + checked.test_list + [(checked.meta["filename"], checked.meta["md5"])])
        images, self.targets = [], []
        for name in [*files, checked.meta["filename"]]:
            if verify_checksums and not check_integrity(str(folder / name), md5[name]):
                raise ValueError(f"{dataset}: {folder / name} fails the md5 check of the official archive; "
                                 f"re-extract the official archive or pass verify_checksums=false")
        for name in files:
            path = folder / name
            entry = read_cifar_pickle(path, root, ("data", label_key))
            data = np.asarray(entry["data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(entry[label_key]):
                raise ValueError(f"CIFAR file {path}: 'data' is {data.dtype} {data.shape} with {len(entry[label_key])} labels; "
                                 f"expected N x 3072 uint8 with N labels; {_cifar_fix(root)}")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel-major rows -> HWC
            self.targets.extend(int(label) for label in entry[label_key])
        self.images = np.concatenate(images)
        meta = read_cifar_pickle(folder / checked.meta["filename"], root, (checked.meta["key"],))
        self.classes = [_str_key(name) for name in meta[checked.meta["key"]]]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


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


class LabelledSubset(Dataset):
    """The ``(image, label)`` pairs of ``dataset`` at ``indices``, the image through ``transform``: a training
    set and the validation images held out of it share one read of the files, each with its own transform."""

    def __init__(self, dataset: Dataset, indices, transform):
        self.dataset, self.indices, self.transform = dataset, [int(i) for i in indices], transform
        self.targets = [dataset.targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[self.indices[index]]
        return self.transform(image), label


def held_out_per_class(targets: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` randomly chosen samples of every label that occurs in ``targets``."""
    order = rng.permutation(len(targets))
    order = order[np.argsort(targets[order], kind="stable")]  # grouped by label, random within each label
    grouped = targets[order]
    rank = np.arange(len(order)) - np.searchsorted(grouped, grouped, side="left")  # position within its label
    return np.sort(order[rank < per_class])


class ClassificationDataModule(TaskDataModule):
    """CIFAR-10, CIFAR-100 or ImageNet (``dataset``) from ``root`` in the official layout.

    Validation (and so the best checkpoint) never sees the test split: it is held out of the training
    images, which training then never sees. CIFAR: a seeded ``val_fraction`` of the 50k training images
    (0.1: 5,000) validate, the rest train (random crop with 4 px padding + flip); the 10k test images
    test. ImageNet: ``val_per_class`` seeded training images of every class validate (10: 10,000 of
    1.28M), the rest of ``train/`` trains (RandomResizedCrop ``crop_size`` + flip); ``val/`` tests
    (resize to ``crop_size * 256/224``, centre crop, as validation). ``val_seed`` seeds the choice.
    Predict: the test split, or the images in ``predict_root``. ``num_classes`` and ``classes`` are
    known after ``setup``.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        root: str | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        crop_size: int = 224,
        val_fraction: float = 0.1,
        val_per_class: int = 10,
        val_seed: int = 0,
        predict_root: str | None = None,
        verify_checksums: bool = False,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if val_per_class < 1:
            raise ValueError(f"val_per_class must be at least 1, got {val_per_class}")
        self.root = Path(root or DEFAULT_ROOTS[dataset])
        self.num_classes: int | None = None
        self.classes: list[str] = []

    @property
    def validation_split(self) -> str:
        hp = self.hparams
        if hp.dataset in CIFAR:
            return f"{100 * hp.val_fraction:g}% of the training images (seed {hp.val_seed}), held out of training"
        return f"{hp.val_per_class} training images per class (seed {hp.val_seed}), held out of training"

    def _transforms(self) -> tuple:
        if self.hparams.dataset in CIFAR:
            train = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
            evaluation = [transforms.Resize(32), transforms.CenterCrop(32)]  # identity on CIFAR's 32x32 images
        else:
            crop = self.hparams.crop_size
            train = [transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip()]
            evaluation = [transforms.Resize(round(crop * 256 / 224)), transforms.CenterCrop(crop)]
        return transforms.Compose([*train, transforms.ToTensor()]), transforms.Compose([*evaluation, transforms.ToTensor()])

    def _read_cifar(self) -> tuple[CIFARImages, CIFARImages]:
        dataset = self.hparams.dataset
        check_cifar(self.root, dataset)
        checked, self.num_classes, _ = CIFAR[dataset]
        training, test = (
            CIFARImages(self.root, dataset, [name for name, _ in files], self.hparams.verify_checksums)
            for files in (checked.train_list, checked.test_list)
        )
        self.classes = training.classes
        return training, test

    def _read_imagenet(self) -> tuple[datasets.ImageFolder, datasets.ImageFolder]:
        self.classes = check_image_folders(self.root)
        self.num_classes = len(self.classes)
        # allow_empty: a class folder without images is allowed (the synthetic set fills only a few)
        folders = [datasets.ImageFolder(self.root / split, loader=open_rgb, allow_empty=True) for split in ("train", "val")]
        for split, folder in zip(("train", "val"), folders):
            if not len(folder):
                raise FileNotFoundError(f"imagenet: {self.root / split} holds no {'/'.join(IMAGE_SUFFIXES)} images; {SYNTH_HINT}")
        return folders[0], folders[1]

    def _hold_out(self, targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) indices of the training images, disjoint."""
        hp = self.hparams
        targets = np.asarray(targets)
        rng = np.random.default_rng(hp.val_seed)
        if hp.dataset in CIFAR:
            held = round(hp.val_fraction * len(targets))
            if not 0 < held < len(targets):
                raise ValueError(f"{hp.dataset}: val_fraction={hp.val_fraction} holds out {held} of the {len(targets)} "
                                 f"training images in {self.root}; choose one that leaves both splits non-empty")
            validation = np.sort(rng.permutation(len(targets))[:held])
        else:
            counts = np.bincount(targets, minlength=len(self.classes))
            small = np.flatnonzero((counts > 0) & (counts <= hp.val_per_class))  # empty class folders are allowed
            if len(small):
                folder = self.root / "train" / self.classes[small[0]]
                raise ValueError(f"imagenet: {folder} holds {counts[small[0]]} images, too few to hold out "
                                 f"val_per_class={hp.val_per_class} and still train; lower --data.val_per_class")
            validation = held_out_per_class(targets, hp.val_per_class, rng)
        return np.setdiff1d(np.arange(len(targets)), validation), validation

    def setup(self, stage: str | None = None) -> None:
        train_transform, eval_transform = self._transforms()
        training, test = self._read_cifar() if self.hparams.dataset in CIFAR else self._read_imagenet()
        train_indices, val_indices = self._hold_out(training.targets)
        self.train_set = LabelledSubset(training, train_indices, train_transform)
        self.val_set = LabelledSubset(training, val_indices, eval_transform)
        self.test_set = LabelledSubset(test, range(len(test)), eval_transform)
        if self.hparams.predict_root:
            self.predict_set = PredictFolder(self.hparams.predict_root, ImageAs("image", eval_transform))
        else:
            self.predict_set = _Named(self.test_set, "val" if self.hparams.dataset == "imagenet" else "test")

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
        return self._split_loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._split_loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._split_loader(self.predict_set, shuffle=False)


# --- synthetic data: learnable classes (each a colour and a shape), in the official formats ----------------

SYNTH_CIFAR_PER_BATCH = 20  # images per CIFAR-10 data batch file (5 files); CIFAR-100 gets as many in total
# ImageNet's 1000 class folders (placeholder wnids) so the 1000-way configs run on it; only the first
# few hold images, keeping a 224x224 training step of the big Ad-ResNets on a CPU to a handful of images.
SYNTH_IMAGENET_WNIDS = tuple(f"n{index:08d}" for index in range(1000))
SYNTH_IMAGENET_FILLED = 2
# Training images per filled class: the configs hold out 10 per class for validation (val_per_class), 2 train.
SYNTH_IMAGENET_TRAIN_PER_CLASS = 12
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


class _Python2Pickler(pickle._Pickler):
    """Pickles ``str`` and ``bytes`` (a numpy array's raw data) as python 2's byte strings, as python 2's cPickle
    wrote the official CIFAR batches: loaded with ``encoding="latin1"`` (torchvision) their keys are ``str``,
    with ``encoding="bytes"`` (the CIFAR page's snippet) ``bytes``; numpy reads the arrays either way."""

    def save_py2_str(self, value: str | bytes) -> None:
        data = value.encode("latin1") if isinstance(value, str) else value
        size = len(data)
        self.write(pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + struct.pack("<i", size))
        self.write(data)
        self.memoize(value)

    dispatch = {**pickle._Pickler.dispatch, str: save_py2_str, bytes: save_py2_str}


def _write_pickle(path: Path, content: dict) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        _Python2Pickler(handle, protocol=2).dump(content)
    return path


def write_synthetic_cifar(root: Path, dataset: str, rng: np.random.Generator) -> list[Path]:
    """The CIFAR batch files of ``dataset`` under ``root/<base folder>``, each labels cycling over every class."""
    checked, num_classes, label_key = CIFAR[dataset]
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
    """ROOT/{train,val}/<wnid>/ for 1000 wnids; the first ``filled`` hold small real JPEGs
    (``SYNTH_IMAGENET_TRAIN_PER_CLASS`` in train/, one in val/), the others none."""
    written = []
    for split, per_class in (("train", SYNTH_IMAGENET_TRAIN_PER_CLASS), ("val", 1)):
        for label, wnid in enumerate(SYNTH_IMAGENET_WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class if label < filled else 0):
                path = folder / f"{wnid}_{split}_{index:04d}.JPEG"
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
