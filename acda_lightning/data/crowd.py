"""Crowd counting data: ShanghaiTech A/B and UCF-QNRF in their official layouts, CrowdDataModule, synthetic writer."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from ..utils import atomic_path
from .base import TaskDataModule
from .density import cached_density, density_key, gaussian_density, points_inside, sum_pool
from .images import IMAGE_SUFFIXES, PredictFolder, read_rgb, to_tensor
from .synth import register_synth

SYNTH_HINT = "write a small synthetic set in this layout with `acda data synth crowd --out data`"


def load_points(annotation: Path, key: str) -> np.ndarray:
    """(N, 2) x, y points, 1-based as stored. ``key``: "image_info" (ShanghaiTech) or "annPoints" (UCF-QNRF)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(annotation)
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        raise ValueError(f"cannot read annotation {annotation} ({error}); expected a MATLAB .mat file") from error
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"annotation {annotation} has no {key!r} variable (found {found}); expected the official {key} layout")
    try:
        points = mat[key][0, 0][0, 0][0] if key == "image_info" else mat[key]
        points = np.asarray(points, np.float64).reshape(-1, points.shape[-1] if points.size else 2)[:, :2]
    except (IndexError, ValueError, TypeError) as error:
        layout = "image_info{1}.location (N x 2)" if key == "image_info" else "annPoints (N x 2)"
        raise ValueError(f"annotation {annotation}: cannot read the points from {key!r} ({error}); expected {layout}") from error
    return points


def bounded_size(height: int, width: int, min_size: int | None, max_size: int | None) -> tuple[int, int]:
    """Resize target keeping the aspect: long side <= max_size first, then short side >= min_size if still allowed.

    The Bayesian-Loss convention for UCF-QNRF (Ma et al., ICCV 2019): min_size=512, max_size=2048.
    """
    scale = 1.0
    if max_size and max(height, width) > max_size:
        scale = max_size / max(height, width)
    elif min_size and min(height, width) < min_size:
        scale = min(min_size / min(height, width), (max_size or math.inf) / max(height, width))
    return round(height * scale), round(width * scale)


class CrowdImages(Dataset):
    """Images with head-point annotations -> ``{"image", "density", "count", "name"}`` at full resolution.

    ``items``: (image path, annotation path) pairs; ``key`` the .mat variable holding the points.
    Points are converted from the files' 1-based coordinates; those outside the image are
    dropped (one warning per file). Images whose size leaves [min_size, max_size] are resized
    with their points. ``density`` is a (1, H, W) float32 map from ``gaussian_density``, cached
    in ``cache_dir`` (h5, ``density`` dataset) unless ``cache_dir`` is None; ``transform``
    maps the sample dict to another (crops, flips, down-sampling).
    """

    def __init__(
        self,
        items: Sequence[tuple[Path, Path]],
        key: str,
        sigma: float = 4.0,
        adaptive_sigma: bool = False,
        min_size: int | None = None,
        max_size: int | None = None,
        cache_dir: str | Path | None = None,
        transform: Callable[[dict], dict] | None = None,
    ):
        self.items = list(items)
        self.key = key
        self.sigma, self.adaptive_sigma = sigma, adaptive_sigma
        self.min_size, self.max_size = min_size, max_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W, 3) uint8 image (resized if out of bounds) and its in-image points, 0-based (x, y)."""
        image_path, annotation = self.items[index]
        image = read_rgb(image_path)
        points = load_points(annotation, self.key) - 1.0  # MATLAB's 1-based pixel coordinates
        height, width = image.shape[:2]
        new_height, new_width = bounded_size(height, width, self.min_size, self.max_size)
        if (new_height, new_width) != (height, width):
            image = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
            # pixel centres at integers: x' = (x + 0.5) * s - 0.5 keeps each head on the same content
            points = (points + 0.5) * np.array([new_width / width, new_height / height]) - 0.5
        inside = points_inside(points, image.shape[:2])
        if not inside.all():
            warnings.warn(
                f"{annotation}: {int((~inside).sum())} of {len(points)} points lie outside the "
                f"{image.shape[1]}x{image.shape[0]} image and were dropped",
                stacklevel=2,
            )
        return image, points[inside]

    def density(self, index: int, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        settings = dict(sigma=self.sigma, adaptive=self.adaptive_sigma)
        render = lambda: gaussian_density(points, shape, **settings)  # noqa: E731
        if self.cache_dir is None:
            return render()
        image_path, annotation = self.items[index]
        cache_file = self.cache_dir / ("_".join(image_path.with_suffix("").parts[-4:]) + ".h5")  # unique per part and split
        return cached_density(cache_file, density_key(annotation, shape, **settings), render)

    def __getitem__(self, index: int) -> dict:
        image, points = self.load(index)
        sample = {
            "image": np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / 255.0,
            "density": self.density(index, points, image.shape[:2])[None],
            "count": float(len(points)),
            "name": self.items[index][0].stem,
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return {**sample, "image": torch.from_numpy(sample["image"]), "density": torch.from_numpy(sample["density"])}


def _missing_root(root: Path, layout: str) -> FileNotFoundError:
    return FileNotFoundError(f"crowd dataset not found at {root}: expected {layout}; {SYNTH_HINT}")


def _paired(images: list[Path], annotation_of: Callable[[Path], Path], folder: Path, layout: str) -> list[tuple[Path, Path]]:
    if not images:
        raise _missing_root(folder, layout)
    items = []
    for image in images:
        annotation = annotation_of(image)
        if not annotation.is_file():
            raise FileNotFoundError(f"image {image} has no annotation: expected {annotation} ({layout})")
        items.append((image, annotation))
    return items


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


class ShanghaiTech(CrowdImages):
    """ShanghaiTech part A or B: ``root/part_{A,B}_final/{train,test}_data/images/IMG_n.jpg`` with
    ``.../ground_truth/GT_IMG_n.mat`` (``ground-truth`` accepted), points in ``image_info{1}.location``."""

    LAYOUT = "part_{A,B}_final/{train,test}_data/images/IMG_n.jpg and .../ground_truth/GT_IMG_n.mat"

    def __init__(self, root: str | Path, part: str = "A", split: str = "train", **kwargs):
        if part not in ("A", "B") or split not in ("train", "test"):
            raise ValueError(f"ShanghaiTech part must be 'A' or 'B' and split 'train' or 'test', got {part!r}, {split!r}")
        folder = Path(root) / f"part_{part}_final" / f"{split}_data"
        labels = next((folder / name for name in ("ground_truth", "ground-truth") if (folder / name).is_dir()), None)
        if labels is None:
            raise _missing_root(folder, self.LAYOUT)
        items = _paired(_images_in(folder / "images"), lambda p: labels / f"GT_{p.stem}.mat", folder / "images", self.LAYOUT)
        super().__init__(items, "image_info", **kwargs)


class UCFQNRF(CrowdImages):
    """UCF-QNRF: ``root/{Train,Test}/img_XXXX.jpg`` with ``img_XXXX_ann.mat`` (``annPoints``, N x 2 x, y).

    Its images reach 9000 px: by default they are resized so the long side is at most 2048 (the
    bound of the Bayesian-Loss preprocessing, Ma et al. 2019; its short-side floor of 512 is
    ``min_size=512``, off by default so small images are not up-sampled).
    """

    LAYOUT = "{Train,Test}/img_XXXX.jpg with img_XXXX_ann.mat (annPoints)"

    def __init__(self, root: str | Path, split: str = "train", min_size: int | None = None, max_size: int | None = 2048, **kwargs):
        if split not in ("train", "test"):
            raise ValueError(f"UCFQNRF split must be 'train' or 'test', got {split!r}")
        folder = Path(root) / split.capitalize()
        items = _paired(_images_in(folder), lambda p: p.with_name(f"{p.stem}_ann.mat"), folder, self.LAYOUT)
        super().__init__(items, "annPoints", min_size=min_size, max_size=max_size, **kwargs)


class UnannotatedImage:
    """``make_sample`` of the predict folder: the image prepared by ``transform``, its count unknown (nan)."""

    def __init__(self, transform: Callable[[dict], dict]):
        self.transform = transform

    def __call__(self, image) -> dict:
        sample = self.transform({"image": to_tensor(image).numpy(), "count": math.nan})
        return {**sample, "image": torch.from_numpy(sample["image"])}


def _pad_to(sample: dict, height: int, width: int) -> dict:
    """Zero-pad image and density at the bottom/right (zero density: the count is unchanged)."""
    padded = dict(sample)
    for key in ("image", "density"):
        if key in sample:
            array = sample[key]
            padded[key] = np.pad(array, ((0, 0), (0, height - array.shape[1]), (0, width - array.shape[2])))
    return padded


def _resize_density(density: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize, rescaled so the map keeps its total (the count)."""
    total = float(density.sum())
    resized = np.array(Image.fromarray(density[0]).resize((width, height), Image.BILINEAR), np.float32)
    if total > 0:
        resized *= total / max(float(resized.sum()), 1e-12)
    return resized[None]


class TrainTransform:
    """Scale jitter, a random crop, a horizontal flip, then sum-pooling of the density.

    Image and density see the same geometry. A side shorter than ``crop_size`` is kept whole
    (zero-padded to a multiple of ``downsample``) and ``pad_collate`` pads the batch to its
    largest sample, so small images are padded only as far as the batch needs. A crop's
    ``count`` is the sum of its density: a head whose kernel straddles the crop edge counts by
    the part inside (the usual convention).
    """

    def __init__(self, crop_size: int, downsample: int, hflip: bool = True, scale_range: Sequence[float] | None = None, rng=None):
        if crop_size % downsample:
            raise ValueError(f"crop_size {crop_size} must be a multiple of the density down-sampling factor {downsample}")
        self.crop_size, self.downsample, self.hflip = crop_size, downsample, hflip
        self.scale_range = tuple(scale_range) if scale_range else None
        self.rng = rng or np.random.default_rng()

    def __call__(self, sample: dict) -> dict:
        image, density = sample["image"], sample["density"]
        if self.scale_range:
            scale = self.rng.uniform(*self.scale_range)
            height, width = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale))
            image = np.stack([np.asarray(Image.fromarray(c).resize((width, height), Image.BILINEAR)) for c in image])
            density = _resize_density(density, height, width)
        step = self.downsample
        crop_height, crop_width = (min(self.crop_size, -(-side // step) * step) for side in image.shape[1:])
        padded = _pad_to({"image": image, "density": density}, max(crop_height, image.shape[1]), max(crop_width, image.shape[2]))
        image, density = padded["image"], padded["density"]
        top = int(self.rng.integers(0, image.shape[1] - crop_height + 1))
        left = int(self.rng.integers(0, image.shape[2] - crop_width + 1))
        image = image[:, top : top + crop_height, left : left + crop_width]
        density = density[:, top : top + crop_height, left : left + crop_width]
        if self.hflip and self.rng.random() < 0.5:
            image, density = image[..., ::-1], density[..., ::-1]
        density = sum_pool(np.ascontiguousarray(density), step)
        return {**sample, "image": np.ascontiguousarray(image), "density": density, "count": float(density.sum())}


def pad_collate(samples: list[dict]) -> dict:
    """Zero-pad every sample's image (and density, when it has one) to the batch's largest (bottom/right), then stack.

    Whole-image samples carry their own ``size`` (from ``WholeImageTransform``), so evaluation
    can crop each prediction back to its image however the batch was padded.
    """
    height = max(s["image"].shape[1] for s in samples)
    width = max(s["image"].shape[2] for s in samples)
    padded = []
    for sample in samples:
        image = sample["image"]
        padded.append({**sample, "image": F.pad(image, (0, width - image.shape[2], 0, height - image.shape[1]))})
        if "density" in sample:
            density, scale = sample["density"], image.shape[1] // sample["density"].shape[1]
            padded[-1]["density"] = F.pad(density, (0, width // scale - density.shape[2], 0, height // scale - density.shape[1]))
    return default_collate(padded)


class WholeImageTransform:
    """Pad to a multiple of ``size_divisor`` (the network's total stride), sum-pool the density.

    ``size``: the image's own (height, width) before any padding; evaluation and prediction crop
    the predicted density to it, so heads are counted on the image and never on the padding.
    """

    def __init__(self, size_divisor: int, downsample: int):
        if size_divisor % downsample:
            raise ValueError(f"size_divisor {size_divisor} must be a multiple of the down-sampling factor {downsample}")
        self.size_divisor, self.downsample = size_divisor, downsample

    def __call__(self, sample: dict) -> dict:
        step = self.size_divisor
        height, width = sample["image"].shape[1:]
        padded = _pad_to(sample, -(-height // step) * step, -(-width // step) * step)
        if "density" in padded:
            padded["density"] = sum_pool(padded["density"], self.downsample)
        return {**padded, "size": torch.tensor([height, width])}


class _WorkerSeeded:
    """Gives each dataloader worker its own crop/flip stream (numpy generators are copied into workers)."""

    def __init__(self, transform: TrainTransform):
        self.transform = transform

    def __call__(self, worker_id: int) -> None:
        self.transform.rng = np.random.default_rng(torch.initial_seed() % 2**32)


DATASETS = {"sha": ("ShanghaiTech", "A"), "shb": ("ShanghaiTech", "B"), "qnrf": ("UCFQNRF", None)}


class CrowdDataModule(TaskDataModule):
    """ShanghaiTech A/B or UCF-QNRF for counting: random crops for training, whole images to evaluate.

    ``dataset``: "sha", "shb" or "qnrf"; ``root`` holds ``part_A_final/``... (ShanghaiTech) or
    ``Train/``, ``Test/`` (UCF-QNRF). The datasets have no validation split: ``val_fraction`` of
    the training images (a seeded choice) are held out and evaluated whole, for best-MAE
    checkpointing. ``downsample`` must equal the network's output stride and ``size_divisor``
    its total stride. ``eval_batch_size`` whole images are evaluated (and predicted) at a time, padded
    to the batch's largest; every count is taken on its own image's area, so the numbers do not depend on
    it. ``predict_root``: a folder of images to predict on (default: the test split).
    ``cache_dir``: where density maps are cached (default ``<root>/.density_cache``); ``cache=False`` renders them every time.
    """

    def __init__(
        self,
        root: str = "data/ShanghaiTech",
        dataset: str = "sha",
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 4,
        crop_size: int = 256,
        downsample: int = 2,
        size_divisor: int = 16,
        sigma: float = 4.0,
        adaptive_sigma: bool = False,
        hflip: bool = True,
        scale_range: Sequence[float] | None = None,
        min_size: int | None = None,
        max_size: int | None = 2048,
        val_fraction: float = 0.1,
        cache: bool = True,
        cache_dir: str | None = None,
        predict_root: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be at least 1, got {eval_batch_size}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.train_transform = TrainTransform(crop_size, downsample, hflip, scale_range, np.random.default_rng(seed))
        self.eval_transform = WholeImageTransform(size_divisor, downsample)

    @property
    def validation_split(self) -> str:
        return f"{100 * self.hparams.val_fraction:g}% of the training images (seed {self.hparams.seed}), held out of training"

    def dataset(self, split: str, transform: Callable[[dict], dict] | None = None) -> CrowdImages:
        """The ``split`` ("train"/"test") images of the configured dataset, whole and uncropped unless ``transform``."""
        h = self.hparams
        cache_dir = (Path(h.cache_dir) if h.cache_dir else Path(h.root) / ".density_cache") if h.cache else None
        common = dict(sigma=h.sigma, adaptive_sigma=h.adaptive_sigma, cache_dir=cache_dir, transform=transform)
        family, part = DATASETS[h.dataset]
        if family == "ShanghaiTech":
            return ShanghaiTech(h.root, part, split, **common)
        return UCFQNRF(h.root, split, min_size=h.min_size, max_size=h.max_size, **common)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None):
            train = self.dataset("train", self.train_transform)
            order = np.random.default_rng(self.hparams.seed).permutation(len(train))
            held_out = max(1, round(self.hparams.val_fraction * len(train)))
            if held_out >= len(train):
                raise ValueError(f"{len(train)} training images cannot spare {held_out} for validation; lower val_fraction")
            self.train_set = Subset(train, order[held_out:].tolist())
            self.val_set = Subset(self.dataset("train", self.eval_transform), order[:held_out].tolist())
        if stage in ("test", None):
            self.test_set = self.dataset("test", self.eval_transform)
        if stage == "predict":
            root = self.hparams.predict_root
            self.predict_set = PredictFolder(root, UnannotatedImage(self.eval_transform)) if root else self.dataset("test", self.eval_transform)

    def train_dataloader(self) -> DataLoader:
        return self._loader(
            self.train_set,
            shuffle=True,
            drop_last=len(self.train_set) >= self.hparams.batch_size,
            collate_fn=pad_collate,
            worker_init_fn=_WorkerSeeded(self.train_transform) if self.hparams.num_workers else None,
        )

    def _whole_images(self, dataset: Dataset) -> DataLoader:
        """Under DDP each rank gets a disjoint share with no padded duplicates, so sums reduce exactly."""
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return self._loader(
            dataset,
            self.hparams.eval_batch_size,
            num_workers=min(self.hparams.num_workers, 2),
            persistent=False,
            sampler=sampler,
            collate_fn=pad_collate,
        )

    def val_dataloader(self) -> DataLoader:
        return self._whole_images(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._whole_images(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._whole_images(self.predict_set)


# --- synthetic data in the official layouts -------------------------------------------------------


def _synthetic_crowd(rng: np.random.Generator, height: int, width: int, grayscale: bool) -> tuple[np.ndarray, np.ndarray]:
    """A textured scene with bright round "heads", larger towards the bottom (perspective); returns image, 1-based points."""
    count = int(rng.integers(0, 30))
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    background = 0.25 + 0.1 * np.sin(cols / rng.uniform(6, 14) + rng.uniform(0, 6)) * np.cos(rows / rng.uniform(6, 14))
    scene = np.repeat(background[..., None], 3, axis=2) * rng.uniform(0.6, 1.2, 3)
    points = np.column_stack([rng.uniform(2, width - 3, count), rng.uniform(2, height - 3, count)])
    for x, y in points:
        radius = 1.0 + 2.0 * y / height
        reach = int(3 * radius) + 1  # draw each head in its own window: the rest is < 1e-2
        top, left = max(0, int(y) - reach), max(0, int(x) - reach)
        window = (slice(top, int(y) + reach + 1), slice(left, int(x) + reach + 1))
        blob = np.exp(-((cols[:, window[1]] - x) ** 2 + (rows[window[0]] - y) ** 2) / (2 * radius**2))
        scene[window] += blob[..., None] * rng.uniform(0.4, 0.7) * np.array([1.0, 0.85, 0.7])
    scene += rng.normal(0, 0.03, scene.shape)
    image = (np.clip(scene, 0, 1) * 255).astype(np.uint8)
    if grayscale:
        image = image.mean(axis=2).astype(np.uint8)
    return image, points + 1.0


def _write_jpeg(path: Path, image: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=95)
    return path


def write_shanghaitech_mat(path: Path, points: np.ndarray) -> Path:
    """``image_info`` as MATLAB writes it: a 1x1 cell holding a struct with ``location`` (N x 2) and ``number``."""
    from scipy.io import savemat

    record = np.zeros((1, 1), dtype=[("location", object), ("number", object)])
    record[0, 0]["location"] = np.asarray(points, np.float64).reshape(-1, 2)
    record[0, 0]["number"] = np.array([[len(points)]], np.float64)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = record
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        savemat(handle, {"image_info": cell})
    return path


def write_qnrf_mat(path: Path, points: np.ndarray) -> Path:
    from scipy.io import savemat

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        savemat(handle, {"annPoints": np.asarray(points, np.float64).reshape(-1, 2)})
    return path


SYNTH_SPLITS = {"train": 40, "test": 10}
# Small, so every config's fast_dev_run trains on whole images; sizes vary and most are not multiples of
# the nets' stride 16, so evaluation meets padded batches as on the real sets.
SYNTH_HEIGHTS, SYNTH_WIDTHS = (40, 56), (52, 72)


def _synthetic_size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(SYNTH_HEIGHTS[0], SYNTH_HEIGHTS[1] + 1)), int(rng.integers(SYNTH_WIDTHS[0], SYNTH_WIDTHS[1] + 1))


@register_synth("crowd")
def synth_crowd(out: Path, seed: int) -> list[Path]:
    """ShanghaiTech A/B (``out/ShanghaiTech/part_{A,B}_final``) and UCF-QNRF (``out/UCF-QNRF_ECCV18``).

    Small scenes of bright heads whose number is what a model must learn to count; part B uses
    ``ground-truth`` (the other spelling), every tenth ShanghaiTech image is grayscale.
    """
    rng = np.random.default_rng(seed)
    written = []
    for part, labels in (("A", "ground_truth"), ("B", "ground-truth")):
        for split, number in SYNTH_SPLITS.items():
            folder = out / "ShanghaiTech" / f"part_{part}_final" / f"{split}_data"
            for index in range(1, number + 1):
                image, points = _synthetic_crowd(rng, *_synthetic_size(rng), grayscale=index % 10 == 0)
                written.append(_write_jpeg(folder / "images" / f"IMG_{index}.jpg", image))
                written.append(write_shanghaitech_mat(folder / labels / f"GT_IMG_{index}.mat", points))
    for split, number in SYNTH_SPLITS.items():
        for index in range(1, number + 1):
            image, points = _synthetic_crowd(rng, *_synthetic_size(rng), grayscale=False)
            stem = out / "UCF-QNRF_ECCV18" / split.capitalize() / f"img_{index:04d}"
            written.append(_write_jpeg(stem.with_suffix(".jpg"), image))
            written.append(write_qnrf_mat(stem.with_name(f"{stem.name}_ann.mat"), points))
    return written


def write_counts_csv(path: Path, counts: dict[str, tuple[float, float]]) -> None:
    """``name,predicted_count,true_count`` rows, merged with the file's existing rows (rewritten atomically)."""
    rows = {}
    if path.is_file():
        with open(path, newline="") as handle:
            rows = {row["name"]: row for row in csv.DictReader(handle)}
    for name, (predicted, true) in counts.items():
        rows[name] = {"name": name, "predicted_count": f"{predicted:.3f}", "true_count": "" if math.isnan(true) else f"{true:g}"}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "predicted_count", "true_count"])
        writer.writeheader()
        writer.writerows(rows[name] for name in sorted(rows))
