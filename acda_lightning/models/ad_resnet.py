"""Ad-ResNet-s/m/l (paper Appendix A.4, Table A): ResNets whose deep stages are dynamic bottlenecks with ACDA.

Each variant is a table of stages. ``conv="conv"`` builds the same network with a standard conv of
the same kernel size in place of every ACDA layer (the paper's baseline, Table 7). The trunk (stem
+ stages) is its own module, ``ad_resnet_trunk``, so the crowd-counting net reuses it and a
classification checkpoint's ``net.trunk.*`` weights load into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..paper import AD_RESNET_PARAMETERS
from .layers import check_conv_kind, spatial_conv
from .registry import register_model


@dataclass(frozen=True)
class Stage:
    """One row of Table A: ``depth`` blocks, ``basic`` (two 3x3) or ``bottleneck`` (1x1, kxk, 1x1)."""

    block: str
    width: int  # channels of the kxk convolution(s)
    out_channels: int
    depth: int
    kernel_size: int = 3
    adaptive: bool = False  # the kxk convolution is ACDA when conv="acda" (Conv3_x, Conv4_x)


def _stages(first_two: tuple[Stage, Stage], dynamic_width: int, depths: tuple[int, int]) -> tuple[Stage, ...]:
    """Conv1_x, Conv2_x as given, then the dynamic bottlenecks: ACDA 7x7 in Conv3_x, ACDA 5x5 in Conv4_x."""
    return (
        *first_two,
        Stage("bottleneck", dynamic_width, 2 * dynamic_width, depths[0], 7, adaptive=True),
        Stage("bottleneck", 2 * dynamic_width, 4 * dynamic_width, depths[1], 5, adaptive=True),
    )


VARIANTS: dict[str, tuple[Stage, ...]] = {
    "s": _stages((Stage("basic", 64, 64, 2), Stage("basic", 128, 128, 2)), 128, (2, 2)),
    "m": _stages((Stage("bottleneck", 64, 256, 2), Stage("bottleneck", 128, 512, 2)), 256, (2, 2)),
    "l": _stages((Stage("bottleneck", 64, 256, 2), Stage("bottleneck", 128, 512, 3)), 256, (8, 3)),
}
STEM_CHANNELS = 64


def _conv_bn(conv: nn.Module) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(conv.out_channels)]


class ResidualBlock(nn.Module):
    """relu(body(x) + shortcut(x)); the shortcut is a strided 1x1 conv + BN when the shape changes."""

    def __init__(self, in_channels: int, stage: Stage, stride: int, conv: str, acda_kwargs: dict):
        super().__init__()
        kind = conv if stage.adaptive else "conv"
        kwargs = acda_kwargs if stage.adaptive else {}
        if stage.block == "basic":
            layers = [
                *_conv_bn(spatial_conv("conv", in_channels, stage.width, 3, stride, bias=False)),
                nn.ReLU(inplace=True),
                *_conv_bn(spatial_conv("conv", stage.width, stage.out_channels, 3, bias=False)),
            ]
        elif stage.block == "bottleneck":  # stride on the kxk conv, as torchvision's ResNet v1.5
            layers = [
                *_conv_bn(nn.Conv2d(in_channels, stage.width, 1, bias=False)),
                nn.ReLU(inplace=True),
                *_conv_bn(spatial_conv(kind, stage.width, stage.width, stage.kernel_size, stride, bias=False, **kwargs)),
                nn.ReLU(inplace=True),
                *_conv_bn(nn.Conv2d(stage.width, stage.out_channels, 1, bias=False)),
            ]
        else:
            raise ValueError(f"unknown block {stage.block!r}; expected 'basic' or 'bottleneck'")
        self.body = nn.Sequential(*layers)
        if stride == 1 and in_channels == stage.out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(*_conv_bn(nn.Conv2d(in_channels, stage.out_channels, 1, stride, bias=False)))
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class AdResNetTrunk(nn.Module):
    """Conv0 (7x7/2 conv + BN + ReLU, 3x3/2 max-pool) and Conv1_x..Conv4_x of Table A.

    Returns the last stage's feature map: ``out_channels`` channels at 1/``output_stride`` of the
    input size (32 with the max-pool, 16 without, as the paper's crowd-counting nets use it).
    """

    def __init__(self, variant: str, conv: str = "acda", maxpool: bool = True, **acda_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        check_conv_kind(conv, acda_kwargs)
        self.stem = nn.Sequential(
            *_conv_bn(nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity(),
        )
        stages, channels = [], STEM_CHANNELS
        for index, stage in enumerate(VARIANTS[variant]):
            blocks = []
            for block in range(stage.depth):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(ResidualBlock(channels, stage, stride, conv, acda_kwargs))
                channels = stage.out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels
        self.output_stride = 2 * (2 if maxpool else 1) * 2 ** (len(stages) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class AdResNet(nn.Module):
    """The classifier: ``trunk``, global average pool, ``num_classes``-way FC.

    ``paper_parameters``: the parameter counts the paper gives for this variant and conv kind
    (``acda models`` prints ours beside them).
    """

    def __init__(self, variant: str, num_classes: int = 1000, conv: str = "acda", **acda_kwargs):
        super().__init__()
        self.trunk = AdResNetTrunk(variant, conv, maxpool=True, **acda_kwargs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.trunk.out_channels, num_classes)
        self.num_classes = num_classes
        self.paper_parameters = AD_RESNET_PARAMETERS.get((variant, conv), {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.trunk(x)), 1))


def ad_resnet_trunk(variant: str, conv: str = "acda", maxpool: bool = True, **acda_kwargs) -> AdResNetTrunk:
    """Stem + stages of Ad-ResNet-``variant`` ("s" | "m" | "l"), no pool/FC; see ``AdResNetTrunk``."""
    return AdResNetTrunk(variant, conv, maxpool, **acda_kwargs)


@register_model
def ad_resnet_s(num_classes: int = 1000, conv: str = "acda", **acda_kwargs) -> nn.Module:
    """Ad-ResNet-s (Table A): basic blocks in Conv1_x/Conv2_x, dynamic bottlenecks x2, x2."""
    return AdResNet("s", num_classes, conv, **acda_kwargs)


@register_model
def ad_resnet_m(num_classes: int = 1000, conv: str = "acda", **acda_kwargs) -> nn.Module:
    """Ad-ResNet-m (Table A): bottlenecks x2, x2, dynamic bottlenecks x2, x2 (widths 256/512)."""
    return AdResNet("m", num_classes, conv, **acda_kwargs)


@register_model
def ad_resnet_l(num_classes: int = 1000, conv: str = "acda", **acda_kwargs) -> nn.Module:
    """Ad-ResNet-l (Table A): bottlenecks x2, x3, dynamic bottlenecks x8, x3 (widths 256/512)."""
    return AdResNet("l", num_classes, conv, **acda_kwargs)
