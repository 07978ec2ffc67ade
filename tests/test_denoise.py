"""Real-world denoising on SIDD (paper Sec. 4.3, Table 5): the reader on the official formats, the
patch cache, the VDNet objective term by term, the task end to end, and bad input."""

import math

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.distributions import Gamma, InverseGamma, Normal, kl_divergence

from acda_lightning.cli import main
from acda_lightning.data.sidd import (
    CLEAN_KEY,
    NOISY_KEY,
    SIDD,
    CachedTiles,
    SIDDDataModule,
    build_patch_cache,
    realistic_noise,
)
from acda_lightning.losses import sigma_prior_map, vdnet_terms
from acda_lightning.studies import build_reports
from acda_lightning.tasks import Denoising


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _write_mat_v5(path, key, array):
    scipy.io.savemat(path, {key: array})


def _write_mat_v73(path, key, array):
    """As MATLAB's `save -v7.3` does: HDF5 behind a 512-byte header, the array's axes reversed (column-major)."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset(key, data=np.ascontiguousarray(array.T))
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: synthetic HDF5 schema 1.00 .".ljust(116))


def _blocks(rng, images=2, blocks=3, size=16):
    return rng.integers(0, 256, (images, blocks, size, size, 3), dtype=np.uint8)


@pytest.fixture
def sidd_root(tmp_path):
    """SIDD-Medium style scene folders (with <id>_), one SIDD-Small style (without), v5 validation blocks.

    Every noisy image is 255 - its ground truth, so a sample shows at once whether both got the same crop/turn.
    """
    rng = np.random.default_rng(0)
    root = tmp_path / "SIDD"
    for scene, prefix, shape in [("0001_001_S6_00100_00060_3200_L", "0001_", (40, 56)), ("0002_001_GP_00800_00350_5500_N", "", (48, 40))]:
        for k in ("010", "011"):
            clean = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            _write_png(root / "Data" / scene / f"{prefix}GT_SRGB_{k}.PNG", clean)
            _write_png(root / "Data" / scene / f"{prefix}NOISY_SRGB_{k}.PNG", 255 - clean)
    clean = _blocks(rng)
    _write_mat_v5(root / f"{NOISY_KEY}.mat", NOISY_KEY, 255 - clean)
    _write_mat_v5(root / f"{CLEAN_KEY}.mat", CLEAN_KEY, clean)
    return root


def test_reads_scene_folders_as_written(sidd_root):
    train = SIDD(sidd_root, "train")
    assert len(train) == 4
    sample = train[0]
    assert sample["name"] == "0001_001_S6_00100_00060_3200_L/0001_NOISY_SRGB_010"
    assert sample["noisy"].shape == (3, 40, 56) and sample["noisy"].dtype == torch.float32
    written = np.asarray(Image.open(sidd_root / "Data/0001_001_S6_00100_00060_3200_L/0001_GT_SRGB_010.PNG"))
    assert torch.equal(sample["clean"], torch.from_numpy(written.copy()).permute(2, 0, 1).float() / 255)
    assert torch.allclose(sample["noisy"], 1 - sample["clean"])
    assert train[3]["noisy"].shape == (3, 48, 40)  # the SIDD-Small naming (no <id>_) is read too


@pytest.mark.parametrize("writer", [_write_mat_v5, _write_mat_v73], ids=["v5", "v7.3"])
def test_reads_validation_blocks_in_both_mat_versions(tmp_path, writer):
    clean = _blocks(np.random.default_rng(1), images=2, blocks=3)
    noisy = 255 - clean
    writer(tmp_path / f"{NOISY_KEY}.mat", NOISY_KEY, noisy)
    writer(tmp_path / f"{CLEAN_KEY}.mat", CLEAN_KEY, clean)
    test = SIDD(tmp_path, "test")
    assert len(test) == 6
    sample = test[4]  # image 1, block 1
    assert sample["name"] == "val_01_01"
    assert torch.equal(sample["clean"], torch.from_numpy(clean[1, 1]).permute(2, 0, 1).float() / 255)
    assert torch.equal(sample["noisy"], torch.from_numpy(noisy[1, 1]).permute(2, 0, 1).float() / 255)


def test_v73_blocks_open_lazily_in_each_worker(tmp_path):
    clean = _blocks(np.random.default_rng(2), images=2, blocks=2)
    for key, array in ((NOISY_KEY, 255 - clean), (CLEAN_KEY, clean)):
        _write_mat_v73(tmp_path / f"{key}.mat", key, array)
    test = SIDD(tmp_path, "test")
    test[0]  # opens the files in this process first: workers must not reuse that handle
    loader = torch.utils.data.DataLoader(test, batch_size=1, num_workers=2, multiprocessing_context="fork")
    names = [batch["name"][0] for batch in loader]
    assert names == ["val_00_00", "val_00_01", "val_01_00", "val_01_01"]


def test_patch_cache_is_built_once_atomically_and_rebuilt_when_stale(sidd_root, tmp_path):
    train = SIDD(sidd_root, "train")
    path = build_patch_cache(train, tmp_path / "cache" / "tiles.h5", tile=32)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiles.h5"]  # no temporary left behind
    tiles = CachedTiles(path)
    # 40x56 -> 2x2 tiles (the last ones flush with the border), 48x40 -> 2x2 tiles; 4 images
    assert len(tiles) == 16
    noisy, clean, name = tiles.pair(1)
    assert name.endswith("0001_NOISY_SRGB_010@0,24")
    full_noisy, full_clean, _ = train.pair(0)
    assert np.array_equal(clean, full_clean[0:32, 24:56]) and np.array_equal(noisy, full_noisy[0:32, 24:56])
    stamp = path.stat().st_mtime_ns
    assert build_patch_cache(train, path, tile=32).stat().st_mtime_ns == stamp  # up to date: reused
    assert len(CachedTiles(build_patch_cache(train, path, tile=16))) > 16  # another tile size: rebuilt


@pytest.mark.parametrize("cached", [False, True], ids=["pngs", "h5-cache"])
def test_datamodule_gives_paired_patches_and_validates_on_held_out_scenes(sidd_root, tmp_path, cached):
    data = SIDDDataModule(
        root=str(sidd_root), patch_size=24, patches_per_image=5, batch_size=4,
        cache_dir=str(tmp_path / "cache") if cached else None, cache_tile=32,
    )
    data.prepare_data()
    data.setup("fit")
    # One of the two scenes (val_fraction 0.1, at least one) validates, the other trains: two captures each,
    # cut into 4 tiles of 32x32 when cached.
    images = 8 if cached else 2
    assert len(data.train_set) == images * 5 and len(data.val_set) == images
    batch = next(iter(data.train_dataloader()))
    assert batch["noisy"].shape == batch["clean"].shape == (4, 3, 24, 24)
    assert torch.allclose(batch["noisy"], 1 - batch["clean"])  # the same crop and flip/rotation for both
    scene = lambda name: name.split("/")[0]  # noqa: E731
    training = {scene(data.train_set.source.pair(index)[2]) for index in range(len(data.train_set.source))}
    validation = {scene(batch["name"][0]) for batch in data.val_dataloader()}
    assert len(training) == len(validation) == 1 and not training & validation
    data.setup("test")
    assert len(data.test_set) == 6  # every validation block of the .mat files, which only test reads


def test_val_tiles_spreads_validation_over_the_held_out_scenes(sidd_root, tmp_path):
    data = SIDDDataModule(root=str(sidd_root), val_tiles=3, cache_dir=str(tmp_path / "cache"), cache_tile=16)
    data.prepare_data()
    data.setup("validate")
    names = [data.val_set[index]["name"] for index in range(len(data.val_set))]
    assert len(names) == 3 and names[0].endswith("_010@0,0") and "_011@" in names[-1]  # first and last of both captures
    assert data.validation_split == "16px tiles of 10% of the training scenes (seed 0, at most 3), held out of training"


def test_vdnet_gaussian_kl_equals_the_normal_kl():
    mu, log_m2, clean = torch.randn(3, 1, 2, 5, 5, dtype=torch.float64).unbind()
    log_m2 = log_m2 - 12  # posterior variances near eps0^2 = 1e-6
    ones = torch.ones_like(mu)
    terms = vdnet_terms(mu, log_m2, ones, ones, clean + 0.1, clean, eps2=1e-6)
    direct = kl_divergence(Normal(mu, (0.5 * log_m2).exp()), Normal(clean, math.sqrt(1e-6))).mean()
    assert torch.allclose(terms["kl_gauss"], direct, rtol=1e-10)


def test_vdnet_inverse_gamma_kl_equals_the_kl_of_the_precisions():
    """KL(IG(a, b) || IG(a0, b0)) = KL(Gamma(a, b) || Gamma(a0, b0)): 1/sigma^2 is Gamma with rate b."""
    generator = torch.Generator().manual_seed(0)
    noisy, clean = torch.rand(2, 1, 3, 9, 9, generator=generator, dtype=torch.float64).unbind()
    log_alpha, log_beta = torch.randn(2, 1, 3, 9, 9, generator=generator, dtype=torch.float64).unbind()
    alpha0, beta0 = 7**2 / 2 - 1, 7**2 / 2 * sigma_prior_map(noisy, clean, window=7)
    terms = vdnet_terms(clean, torch.zeros_like(clean), log_alpha, log_beta, noisy, clean, window=7)
    direct = kl_divergence(Gamma(log_alpha.exp(), log_beta.exp()), Gamma(torch.full_like(beta0, alpha0), beta0)).mean()
    assert torch.allclose(terms["kl_igamma"], direct, rtol=1e-10)


def test_vdnet_likelihood_is_the_expected_negative_log_likelihood():
    """Monte Carlo E_{z ~ N(mu, m^2), s2 ~ IG(alpha, beta)} [-log N(y; z, s2)] matches the closed form."""
    generator = torch.Generator().manual_seed(1)
    noisy = torch.rand(1, 1, 2, 2, generator=generator, dtype=torch.float64)
    mu = noisy + 0.05 * torch.randn(noisy.shape, generator=generator, dtype=torch.float64)
    log_m2 = torch.full_like(noisy, math.log(1e-3))
    log_alpha, log_beta = torch.full_like(noisy, math.log(30.0)), torch.full_like(noisy, math.log(0.09))
    terms = vdnet_terms(mu, log_m2, log_alpha, log_beta, noisy, noisy, window=3)
    torch.manual_seed(0)
    samples = 400_000
    z = Normal(mu, math.sqrt(1e-3)).sample((samples,))
    variance = InverseGamma(log_alpha.exp(), log_beta.exp()).sample((samples,))
    monte_carlo = -Normal(z, variance.sqrt()).log_prob(noisy).mean()
    assert torch.allclose(terms["likelihood"], monte_carlo, rtol=2e-3)
    assert torch.allclose(terms["loss"], terms["likelihood"] + terms["kl_gauss"] + terms["kl_igamma"])


def test_sigma_prior_map_is_the_gaussian_window_mean_of_the_squared_noise():
    generator = torch.Generator().manual_seed(2)
    noisy, clean = torch.rand(2, 1, 1, 12, 12, generator=generator, dtype=torch.float64).unbind()
    xi = sigma_prior_map(noisy, clean, window=7)
    offsets = torch.arange(-3, 4, dtype=torch.float64)
    weights = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 3.0**2))
    window = (noisy - clean)[0, 0, 2:9, 3:10] ** 2  # centred on pixel (5, 6)
    assert torch.allclose(xi[0, 0, 5, 6], (weights * window).sum() / weights.sum())
    assert xi.shape == noisy.shape


def test_synthetic_noise_is_signal_dependent_and_spatially_varying():
    def noise_variance(level):
        flat = np.full((96, 96, 3), level, np.uint8)
        residual = realistic_noise(flat, np.random.default_rng(0)).astype(np.float64) - level
        return [residual[rows, cols].var() for rows in (slice(0, 32), slice(64, 96)) for cols in (slice(0, 32), slice(64, 96))]

    bright, dark = noise_variance(200), noise_variance(40)
    assert all(b > 2 * d for b, d in zip(bright, dark))  # brighter -> noisier (shot noise)
    assert max(bright) > 1.3 * min(bright)  # the same brightness is noisier in some corners than in others


def test_synth_writes_a_readable_sidd_with_realistic_noise_levels(tmp_path):
    main(["data", "synth", "sidd", "--out", str(tmp_path)])
    train, test = SIDD(tmp_path / "SIDD", "train"), SIDD(tmp_path / "SIDD", "test")
    assert len(train) == 10 and len(test) == 4
    for sample in (train[0], test[3]):
        noisy_psnr = -10 * torch.log10(((sample["noisy"] - sample["clean"]) ** 2).mean())
        assert 18 < noisy_psnr < 30


@pytest.mark.parametrize(
    "damage, message",
    [
        ("wrong key", "has no variable 'ValidationGtBlocksSrgb'"),
        ("wrong shape", r"expected \(images, blocks, H, W, 3\) uint8"),
        ("missing GT", "has no ground truth 0001_GT_SRGB_011.PNG"),
        ("corrupt PNG", "cannot read image"),
        ("no data", "SIDD root"),
    ],
)
def test_bad_input_names_the_file(sidd_root, damage, message):
    split = "test"
    if damage == "wrong key":
        culprit = sidd_root / f"{CLEAN_KEY}.mat"
        _write_mat_v5(culprit, "gt", _blocks(np.random.default_rng(3)))
    elif damage == "wrong shape":
        culprit = sidd_root / f"{CLEAN_KEY}.mat"
        _write_mat_v5(culprit, CLEAN_KEY, np.zeros((2, 3, 16, 16), np.uint8))
    elif damage == "missing GT":
        culprit, split = sidd_root / "Data/0001_001_S6_00100_00060_3200_L/0001_NOISY_SRGB_011.PNG", "train"
        (culprit.parent / "0001_GT_SRGB_011.PNG").unlink()
    elif damage == "corrupt PNG":
        culprit, split = sidd_root / "Data/0001_001_S6_00100_00060_3200_L/0001_GT_SRGB_010.PNG", "train"
        culprit.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    else:
        culprit = sidd_root.parent / "nowhere"
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        SIDD(culprit if damage == "no data" else sidd_root, split)[0]
    assert str(culprit) in str(error.value)
    if damage == "no data":
        assert "acda data synth denoise" in str(error.value)


SMALL_NET = "{conv: acda, width: 32, hidden: 16, blocks: 2, head_channels: 16}"
# The CPU recipe of `make train-denoise` (README): the miniature at full resolution (down 1). With the
# pixel-unshuffle trunk (down 2) the same 300 steps gained 0.7 dB instead of 5.5 dB.
CPU_RECIPE_NET = "{conv: acda, width: 32, hidden: 16, blocks: 2, head_channels: 16, down: 1}"


@pytest.fixture(scope="module")
def synthetic_sidd(synthetic_workdir):
    return synthetic_workdir("denoise") / "data" / "SIDD"


def _on_synthetic_sidd(synthetic_sidd, tmp_path) -> list[str]:
    """`acda fit` overrides for a SIDD config: the synthetic set, a tile cache under tmp_path, no workers, the CPU."""
    return ["--data.root", str(synthetic_sidd), "--data.cache_dir", str(tmp_path / "cache"), "--data.num_workers", "0",
            "--trainer.accelerator", "cpu"]  # fmt: skip


def test_vdnet_training_stays_finite_then_report_and_predict(synthetic_sidd, tmp_path, acda_fit):
    record = acda_fit(
        "tasks/denoise/sidd_acda_vdnet.yaml", *_on_synthetic_sidd(synthetic_sidd, tmp_path), "--model.net_kwargs", SMALL_NET,
        "--data.patch_size", "32", "--data.batch_size", "4", budget={"max_steps": 3},
    )
    assert record["training"]["steps"] == 3
    terms = record["history"][-1]
    assert all(math.isfinite(terms[f"train/{name}"]) for name in ("loss", "likelihood", "kl_gauss", "kl_igamma"))
    assert {"test/psnr", "test/ssim", "test/noisy_psnr", "test/noisy_ssim"} <= set(record["metrics"])
    assert all(math.isfinite(value) for value in record["metrics"].values())
    assert (tmp_path / "reports/sidd_acda_vdnet/figure.png").is_file()

    # the study puts it beside Table 5 and lists the two runs not made
    (line,) = [line for line in build_reports(tmp_path / "reports") if line.startswith("denoise")]
    report = (tmp_path / "reports/denoise/report.md").read_text()
    assert "39.32" in report and f"{record['metrics']['test/psnr']:.2f}" in report
    assert "sidd_baseline_mse" in report and "missing" in line

    # acda predict on a folder of photos (PNG and JPEG) with the trained checkpoint: denoised PNGs and figures
    folder = tmp_path / "photos"
    _write_png(folder / "shot.png", np.random.default_rng(4).integers(0, 256, (30, 42, 3), dtype=np.uint8))
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 26, 3), dtype=np.uint8)).save(folder / "phone.jpg")
    checkpoint = next((tmp_path / "runs").rglob("*.ckpt"))
    main(["predict", "-c", "tasks/denoise/sidd_acda_vdnet.yaml", *_on_synthetic_sidd(synthetic_sidd, tmp_path),
          "--model.net_kwargs", SMALL_NET, "--ckpt_path", str(checkpoint), "--data.predict_root", str(folder),
          "--predict_dir", str(tmp_path / "out"), "--trainer.default_root_dir", str(tmp_path / "predict_runs"),
          "--report.root", str(tmp_path / "reports"), "--trainer.enable_progress_bar", "false"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "phone.png", "phone_before_after.png", "shot.png", "shot_before_after.png"]
    assert np.asarray(Image.open(tmp_path / "out/shot.png")).shape == (30, 42, 3)
    model = Denoising.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    with torch.no_grad():  # the file holds the checkpoint's 8-bit estimate of that photo
        expected = model.restore(torch.from_numpy(np.array(Image.open(folder / "shot.png"))).permute(2, 0, 1)[None] / 255.0)
    written = torch.from_numpy(np.array(Image.open(tmp_path / "out/shot.png"))).permute(2, 0, 1)[None] / 255.0
    assert (written - expected).abs().max() < 0.5 / 255


@pytest.mark.slow
def test_training_beats_the_noisy_input(synthetic_sidd, tmp_path, acda_fit):
    """`make train-denoise` on the synthetic set in miniature: a small ACDA net, MSE, a few hundred steps on CPU."""
    record = acda_fit(
        "tasks/denoise/sidd_acda_mse.yaml", *_on_synthetic_sidd(synthetic_sidd, tmp_path), "--model.net_kwargs", CPU_RECIPE_NET,
        "--data.patch_size", "48", "--data.patches_per_image", "15", "--data.batch_size", "8",
        "--model.lr", "1e-3", "--model.lr_decay_epochs", "15", budget={"max_epochs": 20},
    )
    assert record["metrics"]["test/psnr"] > record["metrics"]["test/noisy_psnr"] + 2
