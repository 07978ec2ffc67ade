"""The crowd-counting nets (paper Sec. 4.2, A.4): an Ad-ResNet trunk without max-pool and FC, a transposed-conv decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .ad_resnet import ad_resnet_trunk
from .registry import register_model


class CrowdCounter(nn.Module):
    """``trunk`` (stride ``trunk.output_stride``), then one stride-2 transposed conv + BN + ReLU per
    entry of ``decoder_channels``, then a 1x1 conv to a 1-channel density map.

    ``output_stride`` (trunk stride / 2**len(decoder_channels)) is the factor the target density is
    sum-pooled by; ``size_divisor`` (the trunk's stride) is what input sizes must be multiples of.
    The last layer is linear: a final ReLU would start training with dead outputs on empty regions.
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
        layers.append(nn.Conv2d(channels, 1, 1))
        self.decoder = nn.Sequential(*layers)
        self.size_divisor = trunk.output_stride
        if self.size_divisor % 2 ** len(decoder_channels):
            raise ValueError(f"{len(decoder_channels)} stride-2 decoder layers overshoot the trunk's stride {self.size_divisor}")
        self.output_stride = self.size_divisor // 2 ** len(decoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"input of size {height}x{width} is not a multiple of the network's stride {self.size_divisor}; "
                "pad it (CrowdDataModule's size_divisor does)"
            )
        return self.decoder(self.trunk(x))


def _crowd_counter(variant: str, conv: str, decoder_channels: Sequence[int], **acda_kwargs) -> CrowdCounter:
    return CrowdCounter(ad_resnet_trunk(variant, conv=conv, maxpool=False, **acda_kwargs), decoder_channels)


@register_model
def crowd_ad_resnet_s(conv: str = "acda", decoder_channels: Sequence[int] = (256, 128, 64), **acda_kwargs) -> CrowdCounter:
    """Ad-ResNet-s trunk + decoder; ``conv="conv"`` is the paper's baseline (standard convs, same net)."""
    return _crowd_counter("s", conv, decoder_channels, **acda_kwargs)


@register_model
def crowd_ad_resnet_m(conv: str = "acda", decoder_channels: Sequence[int] = (256, 128, 64), **acda_kwargs) -> CrowdCounter:
    """Ad-ResNet-m trunk + decoder."""
    return _crowd_counter("m", conv, decoder_channels, **acda_kwargs)
