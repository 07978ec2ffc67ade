"""LeNet for CIFAR (paper Table 1): two 5x5 convolutions, each a standard conv or an ACDA layer."""

from __future__ import annotations

import torch
from torch import nn

from .layers import spatial_conv
from .registry import register_model


class LeNet(nn.Module):
    """conv 5x5 (3->6), ReLU, max-pool, conv 5x5 (6->16), ReLU, max-pool, FC 400-120-84-classes.

    The adaptive average pool to 5x5 is the identity on 32x32 CIFAR images (the classic LeNet);
    it only lets larger images through.
    """

    def __init__(self, num_classes: int = 10, conv: str = "acda", **acda_kwargs):
        super().__init__()
        self.features = nn.Sequential(
            spatial_conv(conv, 3, 6, 5, padding=0, **acda_kwargs),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            spatial_conv(conv, 6, 16, 5, padding=0, **acda_kwargs),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def lenet(num_classes: int = 10, conv: str = "acda", **acda_kwargs) -> nn.Module:
    """LeNet (Table 1): ``conv="conv"`` is the paper's baseline, ``"acda"`` replaces both convolutions."""
    return LeNet(num_classes, conv, **acda_kwargs)
