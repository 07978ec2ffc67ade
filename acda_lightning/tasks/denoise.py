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

from ..data.images import quantize
from ..plots import image_grid
from ..losses import VDNetLoss
from ..models import create_model
from .restoration import Restoration

OBJECTIVES = ("mse", "vdnet")
FIGURE_IMAGES = 3


def denoiser_kwargs(net_kwargs: dict | None, objective: str) -> dict:
    """The ``denoise_net`` arguments for ``objective``: VDNet's denoiser gives (mu, log m^2) per colour channel."""
    return {**(net_kwargs or {}), **({"posterior": True} if objective == "vdnet" else {})}


class Denoising(Restoration):
    """SIDD denoiser: ``net`` (a ``denoise_*`` model) trained with ``objective`` by Adam, step-decayed."""

    input_key, target_key, input_label, target_label = "noisy", "clean", "noisy", "ground truth"
    baseline_name, output_suffix, compare_suffix = "noisy", "", "_before_after"

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

    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        """The clean estimate: the network's output (MSE) or the posterior mean mu (VDNet)."""
        return self.net(noisy)[:, : noisy.shape[1]]

    def restore(self, noisy: torch.Tensor) -> torch.Tensor:
        return quantize(self.denoise(noisy))

    def baseline(self, noisy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The noisy input itself: the baseline every denoiser must beat."""
        return noisy

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

    def test_artifacts(self, batch: dict, denoised: torch.Tensor, noisy: torch.Tensor) -> dict:
        shown = slice(0, FIGURE_IMAGES)
        return {
            "noisy": noisy[shown].float().cpu().numpy(),
            "denoised": denoised[shown].float().cpu().numpy(),
            "clean": batch["clean"][shown].float().cpu().numpy(),
            "noisy_psnr": self.image_psnr(noisy[shown], batch["clean"][shown]).cpu().numpy(),
            "denoised_psnr": self.image_psnr(denoised[shown], batch["clean"][shown]).cpu().numpy(),
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

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams.lr_decay_epochs, self.hparams.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
