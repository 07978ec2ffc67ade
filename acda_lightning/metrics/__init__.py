"""Evaluation metrics: functional per-image values and torchmetrics wrappers that reduce exactly under DDP."""

from .image import MeanPSNR, MeanSSIM, psnr, rgb_to_y, ssim

__all__ = ["MeanPSNR", "MeanSSIM", "psnr", "rgb_to_y", "ssim"]
