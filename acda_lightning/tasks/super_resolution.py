"""Real-world super-resolution (paper Sec. 4.3, Table 4, Fig. 9): MSE on patches, PSNR/SSIM on Y of whole images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..callbacks.figures import image_grid
from ..data.realsr import write_png
from ..metrics import MeanPSNR, MeanSSIM, psnr
from .base import TaskModule

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits: images are evaluated as the PNGs they would be saved as."""
    return (image.clamp(0, 1) * 255).round() / 255


def bicubic_baseline(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The bicubic upsampling of ``lr`` to ``size``; RealSR v1/v2 LR is already that (stored at HR size)."""
    if tuple(lr.shape[-2:]) == tuple(size):
        return lr
    return F.interpolate(lr, size=size, mode="bicubic", align_corners=False)


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


class SuperResolution(TaskModule):
    """Train on LR/HR patches with MSE (or L1), Adam and a cosine schedule; evaluate whole images.

    - PSNR/SSIM on the BT.601 Y channel (``y_channel``) with ``crop_border`` px cut from each side
      (None: the scale, as RealSR and the paper report); the bicubic baseline is measured on the
      same images and logged beside ours (``test/bicubic_psnr``, ``test/bicubic_ssim``).
    - ``tile``: run evaluation and prediction on overlapping tiles of that many LR pixels
      (None: whole images); ``tile_overlap`` must cover the net's receptive-field radius.
    """

    checkpoint_monitor = ("val/psnr", "max")

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
        tile: int | None = None,
        tile_overlap: int = 48,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        super().__init__(net, {"scale": scale, **(net_kwargs or {})})
        self.save_hyperparameters()
        self.crop_border = scale if crop_border is None else crop_border
        self.loss_fn = LOSSES[loss]
        metric_args = dict(crop_border=self.crop_border, y_channel=y_channel)
        self.val_psnr, self.val_ssim = MeanPSNR(**metric_args), MeanSSIM(**metric_args)
        self.test_psnr, self.test_ssim = MeanPSNR(**metric_args), MeanSSIM(**metric_args)
        self.test_bicubic_psnr, self.test_bicubic_ssim = MeanPSNR(**metric_args), MeanSSIM(**metric_args)
        self.report_artifacts: dict = {}

    def restore(self, lr: torch.Tensor) -> torch.Tensor:
        """The 8-bit super-resolved image, whole or tiled."""
        if self.hparams.tile is None:
            return quantize(self.net(lr))
        upscale, align = getattr(self.net, "upscale", 1), getattr(self.net, "down", 1)
        return quantize(tiled_forward(self.net, lr, self.hparams.tile, self.hparams.tile_overlap, upscale, align))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch["lr"]), batch["hr"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["lr"]), sync_dist=True)
        return self.check_finite(loss, batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        sr = self.restore(batch["lr"])
        self.val_psnr(sr, batch["hr"])
        self.val_ssim(sr, batch["hr"])
        self.log_dict({"val/psnr": self.val_psnr, "val/ssim": self.val_ssim}, prog_bar=True, batch_size=len(sr))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        sr, bicubic = self.restore(lr), quantize(bicubic_baseline(lr, hr.shape[-2:]))
        for metric, image in (
            (self.test_psnr, sr),
            (self.test_ssim, sr),
            (self.test_bicubic_psnr, bicubic),
            (self.test_bicubic_ssim, bicubic),
        ):
            metric(image, hr)
        self.log_dict(
            {
                "test/psnr": self.test_psnr,
                "test/ssim": self.test_ssim,
                "test/bicubic_psnr": self.test_bicubic_psnr,
                "test/bicubic_ssim": self.test_bicubic_ssim,
            },
            batch_size=len(sr),
        )
        if batch_idx == 0:
            as_image = lambda t: t[0].detach().float().permute(1, 2, 0).cpu().numpy()  # noqa: E731
            self.report_artifacts = {
                "name": np.array(batch["name"][0]),
                "lr": as_image(lr.clamp(0, 1)),
                "bicubic": as_image(bicubic),
                "sr": as_image(sr),
                "hr": as_image(hr),
                "bicubic_psnr": self._psnr(bicubic, hr)[0].item(),
                "sr_psnr": self._psnr(sr, hr)[0].item(),
            }

    def _psnr(self, image: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return psnr(image, hr, crop_border=self.crop_border, y_channel=self.hparams.y_channel)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        lr = batch["lr"]
        sr = self.restore(lr)
        outputs = {"lr": lr, "sr": sr, "bicubic": quantize(bicubic_baseline(lr, sr.shape[-2:]))}
        if "hr" in batch:
            outputs["hr"] = batch["hr"]
        return outputs

    def write_predictions(self, outputs: dict, batch, out_dir: Path) -> list[Path]:
        """``<name>_SR.png`` per image, and ``<name>_compare.png`` (LR, bicubic, ours, HR with PSNR, as Fig. 9) when HR is known."""
        written = []
        for index, name in enumerate(batch["name"]):
            written.append(write_png(out_dir / f"{name}_SR.png", outputs["sr"][index]))
            if "hr" not in outputs:
                continue
            hr = outputs["hr"][index : index + 1]
            panels = [("LR", outputs["lr"][index])]
            for label, key in (("bicubic", "bicubic"), ("ours", "sr")):
                value = self._psnr(outputs[key][index : index + 1], hr)[0].item()
                panels.append((f"{label}, PSNR {value:.2f} dB", outputs[key][index]))
            panels.append(("HR", outputs["hr"][index]))
            path = out_dir / f"{name}_compare.png"
            image_grid([[(caption, image.detach().permute(1, 2, 0).float().cpu().numpy()) for caption, image in panels]], path)
            written.append(path)
        return written

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
