"""PSNR/SSIM against scikit-image on the images it ships (RGB and Y, with and without border crop),
and the torchmetrics wrappers reduced across two gloo processes."""

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from acda_lightning.metrics import MeanPSNR, MeanSSIM, psnr, rgb_to_y, ssim

from helpers import free_port

SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee")


def _pair(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-image test image (HWC float in [0, 1]) and a noisy, blurred, clipped copy of it."""
    clean = getattr(skdata, name)()[:96, :128].astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    blurred = (clean + np.roll(clean, 1, 0) + np.roll(clean, 1, 1)) / 3
    degraded = np.clip(blurred + rng.normal(0, 0.03, clean.shape), 0, 1)
    return degraded, clean


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float()


def _y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma written out independently of the code under test."""
    return (16 + 65.481 * image[..., 0] + 128.553 * image[..., 1] + 24.966 * image[..., 2]) / 255


def _skimage_reference(pred: np.ndarray, target: np.ndarray, crop: int, y_channel: bool) -> tuple[float, float]:
    pred, target = pred.astype(np.float32).astype(np.float64), target.astype(np.float32).astype(np.float64)
    if y_channel:
        pred, target = _y(pred), _y(target)
    if crop:
        pred, target = pred[crop:-crop, crop:-crop], target[crop:-crop, crop:-crop]
    channel_axis = None if y_channel else -1
    return (
        peak_signal_noise_ratio(target, pred, data_range=1.0),
        structural_similarity(
            target,
            pred,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=channel_axis,
        ),
    )


@pytest.mark.parametrize("y_channel", [False, True], ids=["rgb", "y"])
@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_ssim_equal_scikit_image(crop_border, y_channel):
    pairs = [_pair(name) for name in SKIMAGE_IMAGES]
    pred = torch.stack([_chw(p) for p, _ in pairs])
    target = torch.stack([_chw(t) for _, t in pairs])
    ours_psnr = psnr(pred, target, crop_border=crop_border, y_channel=y_channel)
    ours_ssim = ssim(pred, target, crop_border=crop_border, y_channel=y_channel)
    assert ours_psnr.shape == ours_ssim.shape == (len(SKIMAGE_IMAGES),)
    for index, (p, t) in enumerate(pairs):
        reference_psnr, reference_ssim = _skimage_reference(p, t, crop_border, y_channel)
        assert abs(ours_psnr[index].item() - reference_psnr) < 1e-4
        assert abs(ours_ssim[index].item() - reference_ssim) < 1e-5


def test_crop_and_luma_change_the_numbers():
    """The conventions are real arguments: each one moves the result (so a test above cannot pass by accident)."""
    pred, target = (_chw(a)[None] for a in _pair("astronaut"))
    pred[..., :3, :] = 0  # damage only the border
    assert psnr(pred, target, crop_border=4) > psnr(pred, target) + 1
    assert ssim(pred, target, y_channel=True) != pytest.approx(ssim(pred, target).item(), abs=1e-4)


def test_y_channel_range_and_data_range_scaling():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert rgb_to_y(white).flatten()[0].item() == pytest.approx(235 / 255, abs=1e-6)
    assert rgb_to_y(black).flatten()[0].item() == pytest.approx(16 / 255)
    pred, target = (_chw(a)[None] for a in _pair("coffee"))
    assert psnr(pred * 255, target * 255, data_range=255.0, y_channel=True).item() == pytest.approx(
        psnr(pred, target, y_channel=True).item(), abs=1e-6
    )
    assert ssim(pred * 255, target * 255, data_range=255.0).item() == pytest.approx(ssim(pred, target).item(), abs=1e-8)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="crop_border"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), crop_border=8)
    with pytest.raises(ValueError, match="RGB"):
        psnr(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), y_channel=True)


def _batches() -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [_pair(name, seed) for name in SKIMAGE_IMAGES for seed in (0, 1)]
    return torch.stack([_chw(p) for p, _ in pairs]), torch.stack([_chw(t) for _, t in pairs])


# Uneven shards: rank 0 sees one image, rank 1 the other five (a mean of per-rank means would be wrong).
SHARDS = (slice(0, 1), slice(1, None))


def _ddp_worker(rank: int, port: int, out_dir) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        pred, target = _batches()
        values = {}
        for name, metric in {"psnr": MeanPSNR(crop_border=2, y_channel=True), "ssim": MeanSSIM(crop_border=2)}.items():
            metric.update(pred[SHARDS[rank]], target[SHARDS[rank]])
            values[name] = metric.compute().item()
        (out_dir / f"rank{rank}.json").write_text(json.dumps(values))
    finally:
        dist.destroy_process_group()


def test_metric_wrappers_reduce_exactly_across_two_processes(tmp_path):
    pred, target = _batches()
    single = {"psnr": MeanPSNR(crop_border=2, y_channel=True), "ssim": MeanSSIM(crop_border=2)}
    for shard in SHARDS:  # one process, batch by batch
        for metric in single.values():
            metric.update(pred[shard], target[shard])
    expected = {name: metric.compute().item() for name, metric in single.items()}
    assert expected["psnr"] == pytest.approx(psnr(pred, target, crop_border=2, y_channel=True).mean().item(), abs=1e-12)

    mp.spawn(_ddp_worker, args=(free_port(), tmp_path), nprocs=2, join=True)
    results = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    for rank in (0, 1):  # every rank holds the global value after compute()
        for name in expected:
            assert results[rank][name] == pytest.approx(expected[name], abs=1e-12)
    shard_mean = psnr(pred[SHARDS[0]], target[SHARDS[0]], crop_border=2, y_channel=True).mean().item()
    assert abs(results[0]["psnr"] - shard_mean) > 1e-3  # rank 0 alone would have reported something else
