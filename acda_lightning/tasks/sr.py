"""Real-world super-resolution (paper Sec. 4.3, Table 4, Fig. 9): MSE on patches, PSNR/SSIM on Y of whole images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import quantize
from ..plots import image_grid
from .restoration import Restoration

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def bicubic_baseline(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The bicubic upsampling of ``lr`` to ``size``; RealSR v1/v2 LR is already that (stored at HR size)."""
    if tuple(lr.shape[-2:]) == tuple(size):
        return lr
    return F.interpolate(lr, size=size, mode="bicubic", align_corners=False)


def receptive_radius(net: torch.nn.Module) -> float:
    """An upper bound, in input pixels, on how far from an output pixel's position an input pixel can affect it.

    Sums the half-width of every convolution (dynamic layers' windows and their generators' kernels
    alike, as if in series) at the resolution it works at (pixel-(un)shuffles change it), plus the
    2-pixel support of the bicubic upsampling a global residual may apply: tiles overlapping by this
    much give whole-image results.
    """
    radius, scale = 2.0, 1.0
    for module in net.modules():
        if isinstance(module, torch.nn.PixelUnshuffle):
            scale *= module.downscale_factor
        elif isinstance(module, torch.nn.PixelShuffle):
            scale /= module.upscale_factor
        elif isinstance(getattr(module, "kernel_size", None), (int, tuple)):
            size, dilation = (torch.nn.modules.utils._pair(getattr(module, key, 1)) for key in ("kernel_size", "dilation"))
            radius += max((k - 1) // 2 * d for k, d in zip(size, dilation)) * scale
    return radius


def tiled_forward(net: torch.nn.Module, x: torch.Tensor, tile: int, overlap: int, upscale: int, align: int) -> torch.Tensor:
    """``net(x)`` computed on overlapping tiles of ``tile`` input pixels, keeping only each tile's centre.

    Every kept pixel lies ``overlap`` px from its tile's cut edges, so when ``overlap`` covers the
    network's receptive-field radius the result equals whole-image inference (no seams). Tile
    origins are multiples of ``align`` (the net's pixel-unshuffle factor) so every tile sees the
    same pixel grouping as the whole image.
    """
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return net(x)
    step = (tile - 2 * overlap) // align * align
    if step < align or overlap % align:
        raise ValueError(
            f"tile={tile} with tile_overlap={overlap} leaves no tile centre aligned to {align} px; "
            f"use tile >= 2 * tile_overlap + {align} and a tile_overlap that is a multiple of {align}"
        )
    output = x.new_zeros(x.shape[0], x.shape[1], height * upscale, width * upscale)
    for top in range(0, height, step):
        for left in range(0, width, step):
            bottom, right = min(top + step, height), min(left + step, width)
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            piece = net(x[..., y0 : min(bottom + overlap, height), x0 : min(right + overlap, width)])
            output[..., top * upscale : bottom * upscale, left * upscale : right * upscale] = piece[
                ..., (top - y0) * upscale : (bottom - y0) * upscale, (left - x0) * upscale : (right - x0) * upscale
            ]
    return output


class SuperResolution(Restoration):
    """Train on LR/HR patches with MSE (or L1), Adam and a cosine schedule; evaluate whole images.

    - PSNR/SSIM on the BT.601 Y channel (``y_channel``) with ``crop_border`` px cut from each side
      (None: the scale, as RealSR and the paper report); the bicubic baseline is measured on the
      same images and logged beside ours (``test/bicubic_psnr``, ``test/bicubic_ssim``).
    - ``tile``: evaluation and prediction run on overlapping tiles of at most ``tile`` x ``tile`` LR
      pixels, so memory stays bounded on large images (smaller images go whole; None: always whole);
      ``tile_overlap`` (None: the net's ``receptive_radius``, rounded up to its pixel-unshuffle factor)
      must cover the receptive field for tiles to match whole-image output.
    """

    input_key, target_key, input_label, target_label = "lr", "hr", "LR", "HR"
    baseline_name, output_suffix, compare_suffix = "bicubic", "_SR", "_compare"

    def __init__(
        self,
        net: str = "sr_net",
        net_kwargs: dict | None = None,
        scale: int = 4,
        loss: str = "mse",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        min_lr_ratio: float = 0.01,
        crop_border: int | None = None,
        y_channel: bool = True,
        tile: int | None = 512,
        tile_overlap: int | None = None,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        border = scale if crop_border is None else crop_border
        super().__init__(net, {"scale": scale, **(net_kwargs or {})}, crop_border=border, y_channel=y_channel)
        self.save_hyperparameters()
        self.crop_border = border
        self.loss_fn = LOSSES[loss]

    def restore(self, lr: torch.Tensor) -> torch.Tensor:
        """The 8-bit super-resolved image, whole or tiled."""
        if self.hparams.tile is None:
            return quantize(self.net(lr))
        upscale, align = getattr(self.net, "upscale", 1), getattr(self.net, "down", 1)
        overlap = self.hparams.tile_overlap
        if overlap is None:
            overlap = math.ceil(receptive_radius(self.net) / align) * align
        return quantize(tiled_forward(self.net, lr, self.hparams.tile, overlap, upscale, align))

    def baseline(self, lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return quantize(bicubic_baseline(lr, size))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch["lr"]), batch["hr"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["lr"]), sync_dist=True)
        return self.check_finite(loss, batch_idx)

    def test_artifacts(self, batch: dict, sr: torch.Tensor, bicubic: torch.Tensor) -> dict:
        lr, hr = batch["lr"], batch["hr"]
        as_image = lambda t: t[0].detach().float().permute(1, 2, 0).cpu().numpy()  # noqa: E731
        return {
            "name": np.array(batch["name"][0]),
            "lr": as_image(lr.clamp(0, 1)),
            "bicubic": as_image(bicubic),
            "sr": as_image(sr),
            "hr": as_image(hr),
            "bicubic_psnr": self.image_psnr(bicubic, hr)[0].item(),
            "sr_psnr": self.image_psnr(sr, hr)[0].item(),
        }

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps, eta_min=self.hparams.lr * self.hparams.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def report_figures(self, artifacts: dict, run_dir: Path) -> None:
        """figure.png: LR, bicubic, ours and HR of the first test image, with PSNR (the paper's Fig. 9)."""
        image_grid(
            [
                [
                    ("LR", artifacts["lr"]),
                    (f"bicubic, PSNR {float(artifacts['bicubic_psnr']):.2f} dB", artifacts["bicubic"]),
                    (f"ours, PSNR {float(artifacts['sr_psnr']):.2f} dB", artifacts["sr"]),
                    ("HR", artifacts["hr"]),
                ]
            ],
            run_dir / "figure.png",
            title=f"{artifacts['name']}: PSNR on Y, border {self.crop_border} px cropped",
        )
