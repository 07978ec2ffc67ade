"""The crowd-counting nets (paper Sec. 4.2, A.4): an Ad-ResNet trunk without max-pool and FC, a transposed-conv decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..paper import CROWD_PARAMETERS
from .ad_resnet import ad_resnet_trunk
from .registry import register_model


class CrowdCounter(nn.Module):
    """``trunk`` (stride ``trunk.output_stride``), then one stride-2 transposed conv + BN + ReLU per
    entry of ``decoder_channels``, then a 1x1 conv to a 1-channel density map.

    ``output_stride`` (trunk stride / 2**len(decoder_channels)) is the factor the target density is
    sum-pooled by; ``size_divisor`` (the trunk's stride) is what input sizes must be multiples of.
    ``paper_parameters``: Table 3's count for the same net (``acda models`` prints ours beside it).
    A ReLU after the 1x1 conv keeps the density >= 0, so no count is negative, and gives exact
    zeros on empty regions (a softplus leaves a positive floor that adds up over a large image).
    """

    def __init__(self, trunk: nn.Module, decoder_channels: Sequence[int]):
        super().__init__()
        self.trunk = trunk
        layers, channels = [], trunk.out_channels
        for out_channels in decoder_channels:
            layers += [
                nn.ConvTranspose2d(channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        layers += [nn.Conv2d(channels, 1, 1), nn.ReLU()]
        self.decoder = nn.Sequential(*layers)
        self.size_divisor = trunk.output_stride
        if self.size_divisor % 2 ** len(decoder_channels):
            raise ValueError(f"{len(decoder_channels)} stride-2 decoder layers overshoot the trunk's stride {self.size_divisor}")
        self.output_stride = self.size_divisor // 2 ** len(decoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1, ceil(H / output_stride), ceil(W / output_stride)).

        Inputs are zero-padded at the bottom/right to a multiple of ``size_divisor`` and the
        output cropped back; CrowdDataModule pads whole images itself so that nothing is cropped.
        """
        height, width = x.shape[-2:]
        step = self.size_divisor
        x = F.pad(x, (0, -width % step, 0, -height % step))
        density = self.decoder(self.trunk(x))
        return density[..., : -(-height // self.output_stride), : -(-width // self.output_stride)]


def _crowd_counter(variant: str, conv: str, decoder_channels: Sequence[int], **acda_kwargs) -> CrowdCounter:
    net = CrowdCounter(ad_resnet_trunk(variant, conv=conv, maxpool=False, **acda_kwargs), decoder_channels)
    if (variant, conv) in CROWD_PARAMETERS:
        net.paper_parameters = CROWD_PARAMETERS[variant, conv]
    return net


@register_model
def crowd_ad_resnet_s(conv: str = "acda", decoder_channels: Sequence[int] = (256, 128, 64), **acda_kwargs) -> CrowdCounter:
    """Ad-ResNet-s trunk + decoder; ``conv="conv"`` is the paper's baseline (standard convs, same net)."""
    return _crowd_counter("s", conv, decoder_channels, **acda_kwargs)


@register_model
def crowd_ad_resnet_m(conv: str = "acda", decoder_channels: Sequence[int] = (256, 128, 64), **acda_kwargs) -> CrowdCounter:
    """Ad-ResNet-m trunk + decoder."""
    return _crowd_counter("m", conv, decoder_channels, **acda_kwargs)
