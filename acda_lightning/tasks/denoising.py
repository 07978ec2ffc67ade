r"""Real-world denoising on SIDD (paper Sec. 4.3, Table 5): MSE or the VDNet objective; PSNR/SSIM in sRGB.

Objectives (``objective``):
- ``"mse"``: the network maps the noisy image to the clean one, loss mean((f(y) - x)^2).
- ``"vdnet"`` (Yue et al., NeurIPS 2019; equations in ``acda_lightning/losses/vdnet.py``): the
  denoiser gives 2C channels, the Gaussian posterior N(mu, m^2) of the clean image, and a
  sigma net (``sigma_net``, VDNet's 5-layer DnCNN-style S-Net) gives 2C more, the inverse-gamma
  posterior IG(alpha, beta) of the per-pixel noise variance; the loss is the negative ELBO
  likelihood + KL(N(mu, m^2) || N(x, eps0^2)) + KL(IG(alpha, beta) || IG(p^2/2 - 1, p^2/2 xi)),
  xi the p x p Gaussian-window mean of (y - x)^2. The denoised image is mu. The denoiser's
  variance channel is read as log m^2 - log eps0^2 (an offset, not a new parameter) so that
  training starts at the prior's m^2 = eps0^2 instead of spending its first steps there.

Metrics: PSNR and SSIM on RGB sRGB (no Y conversion, as SIDD and VDNet report), of the output
clamped to [0, 1] and rounded to 8 bits as the benchmark's PNG/.mat submissions are; SSIM is
the Gaussian-window (11, sigma 1.5) index averaged over the valid region and the three channels
(BasicSR / scikit-image convention, ``acda_lightning.metrics.ssim``). ``test/noisy_psnr`` and
``test/noisy_ssim`` score the noisy input itself, the baseline every denoiser must beat.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..callbacks.figures import image_grid
from ..losses import VDNetLoss
from ..metrics import MeanPSNR, MeanSSIM, psnr
from ..models import create_model
from ..utils import atomic_path
from .base import TaskModule

OBJECTIVES = ("mse", "vdnet")
FIGURE_IMAGES = 3


def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels an sRGB PNG holds."""
    return image.clamp(0, 1).mul(255).round().div(255)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().permute(1, 2, 0).cpu().numpy()


def denoiser_kwargs(net_kwargs: dict | None, objective: str) -> dict:
    """The ``denoise_net`` arguments for ``objective``: VDNet's denoiser gives (mu, log m^2) per colour channel."""
    return {**(net_kwargs or {}), **({"posterior": True} if objective == "vdnet" else {})}


class Denoising(TaskModule):
    """SIDD denoiser: ``net`` (a ``denoise_*`` model) trained with ``objective`` by Adam, step-decayed."""

    checkpoint_monitor = ("val/psnr", "max")

    def __init__(
        self,
        net: str = "denoise_net",
        net_kwargs: dict | None = None,
        objective: str = "mse",
        sigma_net: str = "denoise_sigma_net",
        sigma_net_kwargs: dict | None = None,
        eps2: float = 1e-6,
        sigma_window: int = 7,
        lr: float = 2e-4,
        lr_decay_epochs: int = 10,
        lr_decay: float = 0.5,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        super().__init__(net, denoiser_kwargs(net_kwargs, objective))
        self.save_hyperparameters()
        if objective == "vdnet":
            self.sigma_net = create_model(sigma_net, **(sigma_net_kwargs or {}))
            self.vdnet_loss = VDNetLoss(eps2, sigma_window)
        for stage in ("val", "test"):
            setattr(self, f"{stage}_psnr", MeanPSNR())
            setattr(self, f"{stage}_ssim", MeanSSIM())
        self.test_noisy_psnr, self.test_noisy_ssim = MeanPSNR(), MeanSSIM()
        self.report_artifacts: dict = {}

    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        """The clean estimate: the network's output (MSE) or the posterior mean mu (VDNet)."""
        return self.net(noisy)[:, : noisy.shape[1]]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        noisy, clean = batch["noisy"], batch["clean"]
        if self.hparams.objective == "mse":
            loss = F.mse_loss(self.net(noisy), clean)
        else:
            mu, log_m2 = self.net(noisy).chunk(2, dim=1)
            denoiser = torch.cat([mu, log_m2 + math.log(self.hparams.eps2)], dim=1)
            terms = self.vdnet_loss(denoiser, self.sigma_net(noisy), noisy, clean)
            loss = terms.pop("loss")
            self.log_dict({f"train/{name}": value for name, value in terms.items()}, on_epoch=True, on_step=False,
                          batch_size=len(noisy), sync_dist=True)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(noisy), sync_dist=True)
        return self.check_finite(loss, batch_idx)

    def _score(self, stage: str, batch: dict) -> torch.Tensor:
        denoised = to_8bit(self.denoise(batch["noisy"]))
        getattr(self, f"{stage}_psnr")(denoised, batch["clean"])
        getattr(self, f"{stage}_ssim")(denoised, batch["clean"])
        self.log_dict({f"{stage}/psnr": getattr(self, f"{stage}_psnr"), f"{stage}/ssim": getattr(self, f"{stage}_ssim")},
                      prog_bar=stage == "val", batch_size=len(denoised))
        return denoised

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        denoised = self._score("test", batch)
        self.test_noisy_psnr(batch["noisy"], batch["clean"])
        self.test_noisy_ssim(batch["noisy"], batch["clean"])
        self.log_dict({"test/noisy_psnr": self.test_noisy_psnr, "test/noisy_ssim": self.test_noisy_ssim},
                      batch_size=len(denoised))
        if batch_idx == 0:
            shown = slice(0, FIGURE_IMAGES)
            self.report_artifacts = {
                "noisy": batch["noisy"][shown].float().cpu().numpy(),
                "denoised": denoised[shown].float().cpu().numpy(),
                "clean": batch["clean"][shown].float().cpu().numpy(),
                "noisy_psnr": psnr(batch["noisy"][shown], batch["clean"][shown]).cpu().numpy(),
                "denoised_psnr": psnr(denoised[shown], batch["clean"][shown]).cpu().numpy(),
                "names": np.array(batch["name"][shown]),
            }

    def report_figures(self, artifacts: dict, run_dir: Path) -> None:
        """figure.png: noisy / denoised / ground truth for the first test blocks, with their PSNRs."""
        rows = [
            [
                (f"{name}: noisy {noisy_db:.2f} dB", noisy.transpose(1, 2, 0)),
                (f"denoised {denoised_db:.2f} dB", denoised.transpose(1, 2, 0)),
                ("ground truth", clean.transpose(1, 2, 0)),
            ]
            for name, noisy, denoised, clean, noisy_db, denoised_db in zip(
                artifacts["names"], artifacts["noisy"], artifacts["denoised"], artifacts["clean"],
                artifacts["noisy_psnr"], artifacts["denoised_psnr"],
            )
        ]
        image_grid(rows, run_dir / "figure.png", title=f"SIDD denoising: {type(self.net).__name__}, {self.hparams.objective}")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"denoised": to_8bit(self.denoise(batch["noisy"]))}

    def write_predictions(self, outputs: dict, batch: dict, out_dir: Path) -> list[Path]:
        """``<name>.png`` (the denoised image) and ``<name>_before_after.png`` for every image of the batch."""
        written = []
        for name, noisy, denoised in zip(batch["name"], batch["noisy"], outputs["denoised"]):
            stem = name.replace("/", "__")
            path = Path(out_dir) / f"{stem}.png"
            with atomic_path(path) as tmp:
                Image.fromarray((_hwc(denoised) * 255).round().astype(np.uint8)).save(tmp, format="PNG")
            figure = Path(out_dir) / f"{stem}_before_after.png"
            image_grid([[("noisy", _hwc(noisy.clamp(0, 1))), ("denoised", _hwc(denoised))]], figure, title=name)
            written += [path, figure]
        return written

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams.lr_decay_epochs, self.hparams.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
