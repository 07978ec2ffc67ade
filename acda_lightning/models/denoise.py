"""SIDD denoising networks (paper Sec. 4.3): the dynamic-bottleneck restoration net, and VDNet's sigma network."""

from __future__ import annotations

import torch
from torch import nn

from .layers import spatial_conv
from .registry import register_model
from .restoration import RestorationNet


class GaussianPosteriorNet(nn.Module):
    """(mu, log m^2) of VDNet's Gaussian posterior of the clean image, from one ``RestorationNet`` with 2C channels.

    Its input is [y, 0]: the net's global residual then adds y to mu and nothing to log m^2, so mu
    starts at the noisy image (the restoration net's last conv starts at zero) and log m^2 at 0.
    """

    def __init__(self, in_channels: int = 3, **kwargs):
        super().__init__()
        self.net = RestorationNet(in_channels=2 * in_channels, out_channels=2 * in_channels, **kwargs)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([noisy, torch.zeros_like(noisy)], dim=1))


@register_model
def denoise_net(
    conv: str = "acda",
    posterior: bool = False,
    in_channels: int = 3,
    width: int = 256,
    hidden: int = 64,
    blocks: int = 8,
    kernel_size: int = 5,
    head_channels: int = 64,
    **kwargs,
) -> nn.Module:
    """The SIDD denoiser: ``RestorationNet`` at the input size (pixel-unshuffle by 2, ``blocks`` dynamic
    bottlenecks, pixel-shuffle back, global residual); ``conv="conv"`` is the paper's baseline.

    ``posterior=True`` gives 2 x in_channels outputs, (mu, log m^2), for the VDNet objective.
    The paper gives only the parameter counts (Table 5: 2.28M baseline, 1.97M ACDA); these defaults,
    5x5 ACDA layers as in Ad-ResNet's last stage, give 2.27M and 2.01M (``acda models 'denoise*'``).
    """
    kwargs.update(width=width, hidden=hidden, blocks=blocks, kernel_size=kernel_size, head_channels=head_channels)
    kwargs.update(conv=conv, upscale=1)
    if posterior:
        return GaussianPosteriorNet(in_channels, **kwargs)
    return RestorationNet(in_channels=in_channels, out_channels=in_channels, **kwargs)


@register_model
def denoise_sigma_net(
    in_channels: int = 3, depth: int = 5, features: int = 64, slope: float = 0.2, conv: str = "conv", **acda_kwargs
) -> nn.Module:
    """VDNet's S-Net (Yue et al. 2019): a ``depth``-layer DnCNN-style stack of 3x3 convs with LeakyReLU, no
    normalisation, giving log alpha and log beta of the inverse-gamma noise-variance posterior (2 x in_channels).
    It is VDNet's training-time helper, standard convolutions by default (``conv="acda"`` swaps them too)."""
    layers: list[nn.Module] = [spatial_conv(conv, in_channels, features, 3, **acda_kwargs), nn.LeakyReLU(slope, inplace=True)]
    for _ in range(depth - 2):
        layers += [spatial_conv(conv, features, features, 3, **acda_kwargs), nn.LeakyReLU(slope, inplace=True)]
    layers.append(spatial_conv(conv, features, 2 * in_channels, 3, **acda_kwargs))
    return nn.Sequential(*layers)
