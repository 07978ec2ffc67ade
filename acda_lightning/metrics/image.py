"""PSNR and SSIM per image, in the BasicSR convention papers report, and their DDP-exact torchmetrics wrappers.

SSIM is Wang et al.'s index with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
population covariance, averaged over the *valid* region (no padding) and over channels: equal to
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)``. Both metrics are computed in float64 so that they
match that reference to 1e-4 dB / 1e-5 whatever the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchmetrics import Metric

# ITU-R BT.601 luma for RGB in [0, 1] (the MATLAB rgb2ycbcr convention BasicSR and RealSR use).
_BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
_BT601_Y_OFFSET = 16.0

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def rgb_to_y(image: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, data_range] -> (B, 1, H, W) BT.601 luma Y in [16/255, 235/255] * data_range."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"y_channel needs RGB images shaped (B, 3, H, W), got {tuple(image.shape)}")
    weights = image.new_tensor(_BT601_Y_WEIGHTS).view(1, 3, 1, 1)
    return (_BT601_Y_OFFSET + (image / data_range * weights).sum(1, keepdim=True)) / 255.0 * data_range


def _prepare(pred: torch.Tensor, target: torch.Tensor, data_range: float, crop_border: int, y_channel: bool):
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    if pred.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got {tuple(pred.shape)}")
    if crop_border < 0 or 2 * crop_border >= min(pred.shape[-2:]):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {tuple(pred.shape[-2:])} image")
    pred, target = pred.double(), target.double()
    if y_channel:
        pred, target = rgb_to_y(pred, data_range), rgb_to_y(target, data_range)
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    return pred, target


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image, shape (B,); inf where the images are equal."""
    pred, target = _prepare(pred, target, data_range, crop_border, y_channel)
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(
    size: int, sigma: float, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> torch.Tensor:
    """A centred ``size`` x ``size`` Gaussian of standard deviation ``sigma`` (odd size), summing to 1."""
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    line = torch.exp(-0.5 * (offsets / sigma) ** 2)
    line = line / line.sum()
    return torch.outer(line, line)


def ssim(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False
) -> torch.Tensor:
    """Mean structural similarity of each image, shape (B,), over the valid region and the channels."""
    pred, target = _prepare(pred, target, data_range, crop_border, y_channel)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(pred.shape[-2:])}")
    channels = pred.shape[1]
    # scipy's gaussian_filter window for sigma 1.5 (truncate 3.5 -> radius 5), as skimage's SSIM uses it
    window = gaussian_window(SSIM_WINDOW, SSIM_SIGMA, device=pred.device)
    window = window.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)
    # One grouped convolution filters x, y, x^2, y^2 and xy for every channel at once.
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    mu_x, mu_y, e_xx, e_yy, e_xy = F.conv2d(stacked, window.repeat(5, 1, 1, 1), groups=5 * channels).split(channels, 1)
    var_x, var_y, cov_xy = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1)


class _MeanOverImages(Metric):
    """Mean of a per-image metric over every image seen; sum and count reduce exactly across processes."""

    is_differentiable = False
    full_state_update = False
    per_image: Callable[..., torch.Tensor]  # psnr or ssim, set by each subclass

    def __init__(self, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.data_range, self.crop_border, self.y_channel = data_range, crop_border, y_channel
        # float64 sums: the mean over thousands of images keeps every digit the per-image values have.
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        values = self.per_image(
            pred.detach(), target.detach(), data_range=self.data_range, crop_border=self.crop_border, y_channel=self.y_channel
        )
        self.total += values.sum().to(self.total)
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(math.nan, dtype=torch.float64, device=self.total.device)
        return self.total / self.count


class MeanPSNR(_MeanOverImages):
    """Average over images of each image's PSNR (dB): the number SR/denoising papers report."""

    higher_is_better = True
    per_image = staticmethod(psnr)


class MeanSSIM(_MeanOverImages):
    """Average over images of each image's SSIM (BasicSR / scikit-image Gaussian-window convention)."""

    higher_is_better = True
    per_image = staticmethod(ssim)
