r"""The VDNet variational denoising objective (Yue, Yong, Zhao, Meng, Zhang; NeurIPS 2019).

Model, per pixel i: noisy y_i ~ N(z_i, sigma_i^2); clean prior z_i ~ N(x_i, eps0^2) around the
ground truth x; noise prior sigma_i^2 ~ IG(alpha0, beta0_i) with alpha0 = p^2/2 - 1,
beta0_i = p^2/2 * xi_i, and xi = the Gaussian-weighted mean of (y - x)^2 over a p x p window
(``sigma_prior_map``). The networks give the posteriors q(z_i) = N(mu_i, m_i^2) (denoiser:
mu, log m^2) and q(sigma_i^2) = IG(alpha_i, beta_i) (sigma net: log alpha, log beta).
The loss is the negative ELBO, averaged over pixels and channels (as VDNet's code does):

    likelihood = 1/2 log 2pi + 1/2 [log beta - psi(alpha) + ((y - mu)^2 + m^2) alpha / beta]
                 (= E_q[-log N(y; z, sigma^2)])
    kl_gauss   = 1/2 [(mu - x)^2 / eps0^2 + m^2 / eps0^2 - 1 - log(m^2 / eps0^2)]
                 (= KL(N(mu, m^2) || N(x, eps0^2)))
    kl_igamma  = (alpha - alpha0) psi(alpha) + log Gamma(alpha0) - log Gamma(alpha)
                 + alpha0 (log beta - log beta0) + alpha (beta0 / beta - 1)
                 (= KL(IG(alpha, beta) || IG(alpha0, beta0)))

VDNet works in the noise domain (it predicts y - z); predicting z directly, as here, gives the
same terms. Its SIDD settings are the defaults: eps0^2 = 1e-6, window p = 7 (radius 3, spatial
sigma 3); log-parameters are clamped to [log 1e-10, log 1e10] as in its code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.image import gaussian_window

LOG_MIN, LOG_MAX = math.log(1e-10), math.log(1e10)


def sigma_prior_map(noisy: torch.Tensor, clean: torch.Tensor, window: int = 7) -> torch.Tensor:
    """xi: the squared noise (y - x)^2 smoothed by a ``window`` x ``window`` Gaussian of sigma (window - 1) / 2.

    Per channel, mirrored at the borders (cv2.GaussianBlur's default, which VDNet uses), floored at 1e-10.
    """
    if window % 2 == 0 or window < 3:
        raise ValueError(f"the sigma-prior window must be odd and >= 3, got {window}")
    squared = (noisy - clean) ** 2
    channels, radius = squared.shape[1], window // 2
    kernel = gaussian_window(window, radius, squared.dtype, squared.device).expand(channels, 1, window, window)
    padded = F.pad(squared, (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=channels).clamp_min(1e-10)


def vdnet_terms(
    mu: torch.Tensor,
    log_m2: torch.Tensor,
    log_alpha: torch.Tensor,
    log_beta: torch.Tensor,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    eps2: float = 1e-6,
    window: int = 7,
) -> dict[str, torch.Tensor]:
    """The three negative-ELBO terms (module docstring), each a mean over every element; ``loss`` is their sum."""
    log_m2, log_alpha, log_beta = (t.clamp(LOG_MIN, LOG_MAX) for t in (log_m2, log_alpha, log_beta))
    m2, alpha = log_m2.exp(), log_alpha.exp()
    alpha_over_beta = (log_alpha - log_beta).exp()
    area = window**2
    alpha0 = torch.tensor(area / 2 - 1, dtype=mu.dtype, device=mu.device)
    beta0 = area / 2 * sigma_prior_map(noisy, clean, window)
    likelihood = 0.5 * math.log(2 * math.pi) + 0.5 * torch.mean(
        log_beta - torch.digamma(alpha) + ((noisy - mu) ** 2 + m2) * alpha_over_beta
    )
    m2_over_eps2 = m2 / eps2
    kl_gauss = 0.5 * torch.mean((mu - clean) ** 2 / eps2 + m2_over_eps2 - 1 - torch.log(m2_over_eps2))
    kl_igamma = torch.mean(
        (alpha - alpha0) * torch.digamma(alpha)
        + torch.lgamma(alpha0)
        - torch.lgamma(alpha)
        + alpha0 * (log_beta - beta0.log())
        + beta0 * alpha_over_beta
        - alpha
    )
    return {
        "likelihood": likelihood,
        "kl_gauss": kl_gauss,
        "kl_igamma": kl_igamma,
        "loss": likelihood + kl_gauss + kl_igamma,
    }


class VDNetLoss(nn.Module):
    """``vdnet_terms`` on network outputs: ``denoiser`` (B, 2C: mu, log m^2) and ``sigma`` (B, 2C: log alpha, log beta)."""

    def __init__(self, eps2: float = 1e-6, window: int = 7):
        super().__init__()
        self.eps2, self.window = eps2, window

    def forward(self, denoiser: torch.Tensor, sigma: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor) -> dict:
        channels = noisy.shape[1]
        if denoiser.shape[1] != 2 * channels or sigma.shape[1] != 2 * channels:
            raise ValueError(
                f"VDNet needs 2x{channels} output channels from the denoiser (mu, log m^2) and the sigma net "
                f"(log alpha, log beta), got {denoiser.shape[1]} and {sigma.shape[1]}"
            )
        mu, log_m2 = denoiser.split(channels, dim=1)
        log_alpha, log_beta = sigma.split(channels, dim=1)
        return vdnet_terms(mu, log_m2, log_alpha, log_beta, noisy, clean, self.eps2, self.window)
