"""SIDD (Abdelhamed et al., CVPR 2018) in its official layout: scene folders for training, validation blocks for testing.

Layout under ``root`` (``data/SIDD``)::

    Data/<scene>/[<id>_]NOISY_SRGB_<k>.PNG    training pairs (SIDD-Medium: with ``<id>_``; SIDD-Small: without)
    Data/<scene>/[<id>_]GT_SRGB_<k>.PNG
    ValidationNoisyBlocksSrgb.mat              (images, blocks, 256, 256, 3) uint8, key = file stem
    ValidationGtBlocksSrgb.mat                 MATLAB v5 (scipy) or v7.3 (HDF5, h5py)

Training images are 12-megapixel; ``build_patch_cache`` cuts them once into tiles in one h5 file
(written atomically) that ``CachedTiles`` reads lazily, opening the file once per worker process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..utils import atomic_path
from .base import TaskDataModule
from .images import ImageAs, PredictFolder, read_rgb, to_tensor, write_png
from .synth import register_synth
from .transforms import augment, paired_random_crop

NOISY_KEY, CLEAN_KEY = "ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb"
_NOISY_PATTERN = re.compile(r"NOISY_SRGB_\d+\.png$", re.IGNORECASE)
SYNTH_HINT = "`acda data synth denoise --out data` writes a small synthetic set in this layout"
LAYOUT = (
    "expected <root>/Data/<scene>/[<id>_]NOISY_SRGB_<k>.PNG with [<id>_]GT_SRGB_<k>.PNG beside it, and "
    f"<root>/{NOISY_KEY}.mat + <root>/{CLEAN_KEY}.mat (images x blocks x H x W x 3 uint8)"
)


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} {path} not found; {LAYOUT}. {SYNTH_HINT}")


def find_scene_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(noisy, clean) PNG paths of every scene folder under ``root/Data``, sorted; a missing GT is an error."""
    data = root / "Data"
    if not data.is_dir():
        raise _missing(data, "SIDD training folder")
    pairs = []
    for noisy in sorted(path for path in data.glob("*/*") if _NOISY_PATTERN.search(path.name)):
        clean = noisy.with_name(noisy.name.replace("NOISY_SRGB", "GT_SRGB").replace("noisy_srgb", "gt_srgb"))
        if not clean.is_file():
            raise FileNotFoundError(f"{noisy} has no ground truth {clean.name} beside it; {LAYOUT}")
        pairs.append((noisy, clean))
    if not pairs:
        raise FileNotFoundError(f"no *NOISY_SRGB_*.PNG in the scene folders of {data}; {LAYOUT}. {SYNTH_HINT}")
    return pairs


def _open_blocks(path: Path, key: str):
    """The blocks array of a validation .mat as (images, blocks, H, W, 3): numpy for v5, a lazy h5py view for v7.3."""
    if not path.is_file():
        raise _missing(path, "SIDD validation file")
    if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 stores the array with its axes reversed
        handle = h5py.File(path, "r")
        if key not in handle:
            found = list(handle.keys())
            handle.close()
            raise ValueError(f"{path} has no variable {key!r} (found {found}); {LAYOUT}")
        return handle[key], True
    try:
        mat = scipy.io.loadmat(path, variable_names=[key])
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(f"cannot read MATLAB file {path} ({error}); {LAYOUT}") from error
    if key not in mat:
        found = [name for name, *_ in scipy.io.whosmat(path)]
        raise ValueError(f"{path} has no variable {key!r} (found {found}); {LAYOUT}")
    return mat[key], False


def _blocks_shape(array, reversed_axes: bool, path: Path) -> tuple[int, ...]:
    shape = tuple(array.shape[::-1] if reversed_axes else array.shape)
    if len(shape) != 5 or shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"{path} holds a {array.dtype} array of shape {shape} (as MATLAB sees it); "
            "expected (images, blocks, H, W, 3) uint8, e.g. (40, 32, 256, 256, 3)"
        )
    return shape


class ValidationBlocks:
    """One validation .mat, block by block; an h5 (v7.3) file is opened lazily in the process that reads it."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        array, self._reversed = _open_blocks(path, key)
        self.shape = _blocks_shape(array, self._reversed, path)
        if self._reversed:
            array.file.close()
            self._lazy = LazyH5(path)
        else:
            self._array = array

    def __getitem__(self, index: tuple[int, int]) -> np.ndarray:
        image, block = index
        if self._reversed:
            return np.asarray(self._lazy.file[self.key][:, :, :, block, image]).T
        return self._array[image, block]


class LazyH5:
    """An h5py file opened on first use in each process: an h5py handle must never cross a fork or a pickle."""

    def __init__(self, path: Path):
        self.path, self._file, self._pid = path, None, None

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}


class SIDD(Dataset):
    """SIDD sRGB pairs as ``{"noisy", "clean", "name"}`` (float32 CHW in [0, 1]).

    ``split="train"``: one sample per scene-folder pair (whole image); ``scenes`` names each pair's scene
    folder. ``split="test"``: one sample per 256x256 validation block, named ``val_<image>_<block>``.
    ``transform`` maps a sample dict to a sample dict (e.g. a paired random crop).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root, self.split, self.transform = Path(root), split, transform
        if not self.root.is_dir():
            raise _missing(self.root, "SIDD root")
        if split == "train":
            self.pairs = find_scene_pairs(self.root)
            self.scenes = [noisy.parent.name for noisy, _ in self.pairs]
        else:
            self.noisy_blocks = ValidationBlocks(self.root / f"{NOISY_KEY}.mat", NOISY_KEY)
            self.clean_blocks = ValidationBlocks(self.root / f"{CLEAN_KEY}.mat", CLEAN_KEY)
            if self.noisy_blocks.shape != self.clean_blocks.shape:
                raise ValueError(
                    f"{self.noisy_blocks.path} has shape {self.noisy_blocks.shape} but {self.clean_blocks.path} "
                    f"has {self.clean_blocks.shape}; the noisy and ground-truth blocks must match"
                )

    def __len__(self) -> int:
        if self.split == "train":
            return len(self.pairs)
        images, blocks = self.noisy_blocks.shape[:2]
        return images * blocks

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(noisy, clean, name) as (H, W, 3) uint8 arrays."""
        if self.split == "train":
            noisy_path, clean_path = self.pairs[index]
            noisy, clean = read_rgb(noisy_path), read_rgb(clean_path)
            if noisy.shape != clean.shape:
                raise ValueError(f"{noisy_path} is {noisy.shape[:2]} but its ground truth {clean_path} is {clean.shape[:2]}")
            return noisy, clean, f"{noisy_path.parent.name}/{noisy_path.stem}"
        image, block = divmod(index, self.noisy_blocks.shape[1])
        return self.noisy_blocks[image, block], self.clean_blocks[image, block], f"val_{image:02d}_{block:02d}"

    def __getitem__(self, index: int) -> dict:
        noisy, clean, name = self.pair(index)
        sample = {"noisy": to_tensor(noisy), "clean": to_tensor(clean), "name": name}
        return self.transform(sample) if self.transform else sample


def _tile_starts(size: int, tile: int) -> list[int]:
    """Tile origins covering [0, size): a step of ``tile``, the last tile flush with the border."""
    starts = list(range(0, size - tile + 1, tile))
    return starts if starts[-1] == size - tile else [*starts, size - tile]


def _cache_signature(pairs: Sequence[tuple[Path, Path]], tile: int) -> str:
    """What the cache was cut from: a rebuilt or edited dataset (names, byte sizes) or another tile size is stale."""
    return f"tile={tile};" + ";".join(f"{noisy.name}:{noisy.stat().st_size}:{clean.stat().st_size}" for noisy, clean in pairs)


def build_patch_cache(dataset: SIDD, path: str | os.PathLike, tile: int = 512) -> Path:
    """Cut every training pair into ``tile`` x ``tile`` tiles, once, into one h5 file (``noisy``, ``clean``, ``names``).

    The tile shrinks to the smallest image side if an image is smaller. The file is written under
    a temporary name and renamed, so a crash never leaves a half cache; a cache whose source
    listing or tile size differs is rebuilt.
    """
    path = Path(path)
    sizes = []
    for noisy, _ in dataset.pairs:
        try:
            with Image.open(noisy) as image:
                sizes.append(image.size[::-1])
        except (OSError, SyntaxError) as error:
            raise ValueError(f"cannot read image {noisy} ({error}); replace the file or re-extract the dataset") from error
    tile = min(tile, *(min(size) for size in sizes))
    signature = _cache_signature(dataset.pairs, tile)
    if path.is_file():
        with h5py.File(path, "r") as cache:
            if cache.attrs.get("signature") == signature:
                return path
    origins = [(index, top, left) for index, (height, width) in enumerate(sizes)
               for top in _tile_starts(height, tile) for left in _tile_starts(width, tile)]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as cache:
        shape, chunks = (len(origins), tile, tile, 3), (1, tile, tile, 3)
        noisy_tiles = cache.create_dataset("noisy", shape, np.uint8, chunks=chunks)
        clean_tiles = cache.create_dataset("clean", shape, np.uint8, chunks=chunks)
        names = []
        loaded = -1
        for row, (index, top, left) in enumerate(origins):
            if index != loaded:
                noisy, clean, name = dataset.pair(index)
                loaded = index
            noisy_tiles[row] = noisy[top : top + tile, left : left + tile]
            clean_tiles[row] = clean[top : top + tile, left : left + tile]
            names.append(f"{name}@{top},{left}")
        cache.create_dataset("names", data=np.array(names, dtype=h5py.string_dtype()))
        cache.attrs["signature"] = signature
    return path


class CachedTiles(Dataset):
    """The tiles of a ``build_patch_cache`` file, read lazily (the file opens once in each worker process);
    ``scenes`` names each tile's scene folder."""

    def __init__(self, path: str | os.PathLike):
        self.h5 = LazyH5(Path(path))
        with h5py.File(self.h5.path, "r") as cache:
            self.scenes = [name.decode().split("/")[0] for name in cache["names"][:]]  # "<scene>/<image>@<top>,<left>"

    def __len__(self) -> int:
        return len(self.scenes)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        cache = self.h5.file
        return cache["noisy"][index], cache["clean"][index], cache["names"][index].decode()


class ScenePairs(Dataset):
    """The pairs (whole images or cached tiles) of ``source`` at ``indices``, each as a sample dict."""

    def __init__(self, source: SIDD | CachedTiles, indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        return self.source.pair(self.indices[index])

    def __getitem__(self, index: int) -> dict:
        noisy, clean, name = self.pair(index)
        return {"noisy": to_tensor(noisy), "clean": to_tensor(clean), "name": name}


def held_out_scenes(scenes: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the distinct ``scenes`` (at least one), leaving at least one to train on."""
    distinct = sorted(set(scenes))
    count = max(1, round(fraction * len(distinct)))
    if count >= len(distinct):
        raise ValueError(f"SIDD: {len(distinct)} training scene(s) cannot spare {count} for validation; "
                         "validation needs scenes that training does not see (lower --data.val_fraction or add scenes)")
    return {distinct[i] for i in np.random.default_rng(seed).permutation(len(distinct))[:count]}


def evenly_spaced(indices: Sequence[int], count: int | None) -> list[int]:
    """``count`` of ``indices`` spread evenly from first to last (all of them when ``count`` is None or larger)."""
    if count is None or count >= len(indices):
        return list(indices)
    return [indices[i] for i in np.linspace(0, len(indices) - 1, count).round().astype(int)]


class RandomPatches(Dataset):
    """``patches_per_image`` random ``patch_size`` crops of each pair of ``source`` per epoch, same crop and
    flip/rotation (one of the 8 dihedral transforms) for the noisy and the clean image."""

    def __init__(self, source: SIDD | CachedTiles | ScenePairs, patch_size: int, patches_per_image: int, augment: bool = True):
        self.source, self.patch_size, self.patches_per_image, self.augment = source, patch_size, patches_per_image, augment

    def __len__(self) -> int:
        return len(self.source) * self.patches_per_image

    def __getitem__(self, index: int) -> dict:
        noisy, clean, name = self.source.pair(index // self.patches_per_image)
        clean, noisy = paired_random_crop(to_tensor(clean), to_tensor(noisy), self.patch_size, name=name)
        if self.augment:
            clean, noisy = augment([clean, noisy])
        return {"noisy": noisy, "clean": clean, "name": name}


class SIDDDataModule(TaskDataModule):
    """SIDD sRGB denoising: random paired patches of the training scenes to train, held-out scenes to validate,
    the validation blocks to test.

    SIDD's benchmark ground truth is withheld, so papers (VDNet, ACDA) report the 1280 validation
    blocks: here they are the test split, and nothing else sees them. Per-epoch validation (which
    chooses the best checkpoint) uses a seeded ``val_fraction`` of the training scene folders (both
    captures of each), which training never sees: their cached tiles (``cache_tile`` squares), or
    their whole images without a cache; ``val_tiles`` of them spread evenly over the held-out
    scenes (None: all). ``cache_dir`` turns on the h5 tile cache (``tiles<cache_tile>.h5`` there,
    built once by the first process in ``prepare_data``); without it every patch decodes its whole
    training PNG.
    """

    def __init__(
        self,
        root: str = "data/SIDD",
        patch_size: int = 128,
        patches_per_image: int = 16,
        batch_size: int = 16,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        val_seed: int = 0,
        val_tiles: int | None = None,
        cache_dir: str | None = None,
        cache_tile: int = 512,
        predict_root: str | None = None,
    ):
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")

    @property
    def validation_split(self) -> str:
        hp = self.hparams
        unit = f"{hp.cache_tile}px tiles" if hp.cache_dir else "whole images"
        at_most = "" if hp.val_tiles is None else f", at most {hp.val_tiles}"
        return f"{unit} of {100 * hp.val_fraction:g}% of the training scenes (seed {hp.val_seed}{at_most}), held out of training"

    @property
    def cache_path(self) -> Path | None:
        cache_dir = self.hparams.cache_dir
        return Path(cache_dir) / f"tiles{self.hparams.cache_tile}.h5" if cache_dir else None

    def prepare_data(self) -> None:
        fitting = self.trainer is None or self.trainer.state.fn == "fit"  # only training reads the tile cache
        if self.cache_path is not None and fitting:
            build_patch_cache(SIDD(self.hparams.root, "train"), self.cache_path, self.hparams.cache_tile)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit", "validate"):
            source = CachedTiles(self.cache_path) if self.cache_path is not None else SIDD(hp.root, "train")
            held_out = held_out_scenes(source.scenes, hp.val_fraction, hp.val_seed)
            training = [index for index, scene in enumerate(source.scenes) if scene not in held_out]
            validation = [index for index, scene in enumerate(source.scenes) if scene in held_out]
            self.train_set = RandomPatches(ScenePairs(source, training), hp.patch_size, hp.patches_per_image)
            self.val_set = ScenePairs(source, evenly_spaced(validation, hp.val_tiles))
        # fit too: a missing or damaged test file is found before training, not after it
        if stage in (None, "fit", "test") or (stage == "predict" and hp.predict_root is None):
            self.test_set = SIDD(hp.root, "test")
        if stage == "predict" and hp.predict_root is not None:
            self.predict_set = PredictFolder(hp.predict_root, ImageAs("noisy"))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Without a cache the held-out images are whole training images, whose sizes may differ.
        return self._loader(self.val_set, self.hparams.eval_batch_size if self.cache_path is not None else 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        if self.hparams.predict_root is None:
            return self._loader(self.test_set, self.hparams.eval_batch_size)
        return self._loader(self.predict_set, 1)  # a folder's images may differ in size


# Five scenes: the configs hold one out of training to validate on (val_fraction 0.1, at least one), four train.
SYNTH_TRAIN_IMAGES = ("astronaut", "coffee", "immunohistochemistry", "hubble_deep_field", "retina")
# The test blocks: neither training nor validation sees these pictures. Photographs, like the training scenes (a synthetic
# picture such as the colour wheel would measure something the training set does not teach).
SYNTH_TEST_IMAGES = ("chelsea", "rocket")
# Two captures per scene, as SIDD-Medium's _010 and _011: the same clean image under independent noise,
# so a small set does not let the net memorise one noise draw per picture.
SYNTH_CAPTURES = ("010", "011")


def realistic_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent, spatially varying noise on an (H, W, 3) uint8 image, quantised back to uint8.

    Heteroscedastic Gaussian (the Poisson-Gaussian model of camera noise): variance
    gain(x) * (shot * clean + read), with ``gain`` a smooth random field in [0.4, 1.6], so
    the noise level changes over the image and with its brightness, as SIDD's does.
    """
    height, width = clean.shape[:2]
    coarse = rng.uniform(0.4, 1.6, (3, 3)).astype(np.float32)
    gain = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR))[..., None]
    signal = clean.astype(np.float32) / 255.0
    shot, read = rng.uniform(0.006, 0.012), rng.uniform(0.0002, 0.0006)
    noisy = signal + np.sqrt(gain * (shot * signal + read)) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.clip(np.round(noisy * 255.0), 0, 255).astype(np.uint8)


def _skimage_picture(name: str, size: tuple[int, int]) -> np.ndarray:
    """A scikit-image sample picture, resized to (height, width), as (H, W, 3) uint8."""
    import skimage.data

    picture = getattr(skimage.data, name)()
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=-1)
    return np.asarray(Image.fromarray(picture[..., :3]).resize(size[::-1], Image.LANCZOS))


def _save_mat_v5(path: Path, key: str, blocks: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        scipy.io.savemat(handle, {key: blocks})
    return path


@register_synth("denoise", "sidd")
def synth_sidd(out: Path, seed: int, train_size: tuple[int, int] = (128, 128), blocks: int = 2, block: int = 64) -> list[Path]:
    """OUT/SIDD: 5 training scenes of two 128x128 captures each and 2 other images x 2 blocks of 64x64 in the validation .mat files.

    Same layout and file formats as SIDD-Medium + the validation .mat files (MATLAB v5), with
    ``realistic_noise`` on pictures that scikit-image ships.
    """
    rng = np.random.default_rng(seed)
    root = out / "SIDD"
    written = []
    for index, picture in enumerate(SYNTH_TRAIN_IMAGES, start=1):
        clean = _skimage_picture(picture, train_size)
        scene = root / "Data" / f"{index:04d}_001_SYN_{picture}"
        for capture in SYNTH_CAPTURES:
            written.append(write_png(scene / f"{index:04d}_GT_SRGB_{capture}.PNG", clean))
            written.append(write_png(scene / f"{index:04d}_NOISY_SRGB_{capture}.PNG", realistic_noise(clean, rng)))
    noisy_blocks = np.empty((len(SYNTH_TEST_IMAGES), blocks, block, block, 3), np.uint8)
    clean_blocks = np.empty_like(noisy_blocks)
    for image, picture in enumerate(SYNTH_TEST_IMAGES):
        clean = _skimage_picture(picture, (2 * block, 2 * block))
        noisy = realistic_noise(clean, rng)
        for index in range(blocks):  # SIDD's blocks are 256x256 windows of one full image
            top, left = rng.integers(0, block + 1, 2)
            clean_blocks[image, index] = clean[top : top + block, left : left + block]
            noisy_blocks[image, index] = noisy[top : top + block, left : left + block]
    written.append(_save_mat_v5(root / f"{NOISY_KEY}.mat", NOISY_KEY, noisy_blocks))
    written.append(_save_mat_v5(root / f"{CLEAN_KEY}.mat", CLEAN_KEY, clean_blocks))
    return written
