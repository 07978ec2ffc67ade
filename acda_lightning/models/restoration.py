"""Image-restoration networks of paper Sec. 4.3: a pixel-unshuffle trunk of dynamic bottleneck blocks, global residual.

``RestorationNet`` is the generic network (super-resolution here, denoising builds on it);
``sr_net`` is the RealSR builder. ``conv="conv"`` swaps every ACDA layer for a standard
convolution of the same kernel size: the paper's baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import spatial_conv
from .registry import register_model


class DynamicBottleneck(nn.Module):
    """``x + expand(relu(dynamic(relu(reduce(x)))))``: 1x1 reduce, k x k ACDA (or conv), 1x1 expand."""

    def __init__(self, channels: int, hidden: int, kernel_size: int = 3, conv: str = "acda", **acda_kwargs):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.dynamic = spatial_conv(conv, hidden, hidden, kernel_size, **acda_kwargs)
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.act(self.dynamic(self.act(self.reduce(x)))))


class RestorationNet(nn.Module):
    """2 convs + pixel-unshuffle down, ``blocks`` dynamic bottlenecks, 2 convs + pixel-shuffle up, global residual.

    - ``down``: the pixel-unshuffle factor (the trunk works at 1/down of the input resolution);
      inputs whose size is not a multiple are reflect-padded and the output cropped back.
    - ``upscale``: output size / input size (the SR factor for genuinely small inputs, 1 for
      denoising or inputs already at the target size); the tail pixel-shuffles by down*upscale.
    - The global residual adds the input (bicubically upsampled when ``upscale > 1``), so the
      net predicts a correction; the last conv starts at zero, so training starts from that
      identity/bicubic baseline.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down: int = 2,
        upscale: int = 1,
        width: int = 64,
        blocks: int = 8,
        conv: str = "acda",
        kernel_size: int = 3,
        hidden: int | None = None,
        head_channels: int = 32,
        **acda_kwargs,
    ):
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"the global residual needs in_channels == out_channels, got {in_channels} and {out_channels}")
        for name, value in (("down", down), ("upscale", upscale), ("width", width), ("blocks", blocks)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.down, self.upscale = down, upscale
        shuffle = down * upscale
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, head_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.PixelUnshuffle(down),
            nn.Conv2d(head_channels * down * down, width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(
            *(DynamicBottleneck(width, hidden or width // 2, kernel_size, conv, **acda_kwargs) for _ in range(blocks))
        )
        self.tail = nn.Sequential(
            nn.Conv2d(width, head_channels * shuffle * shuffle, 3, padding=1),
            nn.PixelShuffle(shuffle),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.tail[-1].weight)
        nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_bottom, pad_right = -height % self.down, -width % self.down
        padded = F.pad(x, (0, pad_right, 0, pad_bottom), mode="reflect") if pad_bottom or pad_right else x
        correction = self.tail(self.body(self.head(padded)))[..., : height * self.upscale, : width * self.upscale]
        if self.upscale == 1:
            return x + correction
        return F.interpolate(x, scale_factor=self.upscale, mode="bicubic", align_corners=False) + correction


@register_model
def sr_net(scale: int = 4, version: str = "v3", conv: str = "acda", **kwargs) -> nn.Module:
    """The RealSR network (paper Sec. 4.3) for ``scale`` x2/x3/x4 on RealSR ``version`` v1/v2/v3.

    v3 inputs are genuinely small: the net upsamples by ``scale``. v1/v2 inputs are stored at the
    HR size: the net keeps the size and unshuffles by ``scale`` so its trunk works at the
    resolution the content really has. ``kwargs`` go to ``RestorationNet`` (width, blocks, ...)
    and from there to ``ACDAConv2d`` (num_atoms, generator, ...).
    """
    if scale not in (2, 3, 4):
        raise ValueError(f"RealSR scale must be 2, 3 or 4, got {scale!r}")
    if version == "v3":
        kwargs.setdefault("down", 2)
        return RestorationNet(upscale=scale, conv=conv, **kwargs)
    if version in ("v1", "v2"):
        kwargs.setdefault("down", scale)
        return RestorationNet(upscale=1, conv=conv, **kwargs)
    raise ValueError(f"RealSR version must be 'v1', 'v2' or 'v3', got {version!r}")
