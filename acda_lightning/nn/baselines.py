"""Dynamic-convolution baselines of the paper's comparisons, each a drop-in for nn.Conv2d's geometry.

- ``DynamicFilterConv2d``: DFN-style (Jia et al., 2016) per-pixel filters, a full
  out x in x k x k filter generated at every output pixel with no decomposition: the paper's
  Table 7 row that runs out of memory.
- ``CondConv2d`` (Yang et al., 2019) and ``DynamicConv2d`` (DY-conv, Chen et al., 2020): one
  filter per image, a routing-weighted mixture of ``num_experts`` static kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DynamicFilterConv2d(nn.Module):
    """y[b,o,i,j] = bias[o] + sum_{c,u,v} W[b,o,c,u,v,i,j] xpad[b,c,i*s+u*d,j*s+v*d].

    W is predicted at each output window's centre by a 1x1 generator (in -> gen_hidden, BN, ReLU,
    -> out*in*k*k). Its last layer starts at zero with a static kernel as its bias, so the layer
    starts as an ordinary convolution (as ACDAConv2d's generator does).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
        gen_hidden: int = 64,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.generator = nn.Sequential(
            nn.Conv2d(in_channels, gen_hidden, 1),
            nn.BatchNorm2d(gen_hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(gen_hidden, out_channels * in_channels * kernel_size * kernel_size, 1),
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        static = nn.Conv2d(in_channels, out_channels, kernel_size).weight.detach()
        with torch.no_grad():
            self.generator[-1].weight.zero_()
            self.generator[-1].bias.copy_(static.flatten())

    def filters(self, x: torch.Tensor) -> torch.Tensor:
        """W: (B, out, in, k, k, H_out, W_out), generated at the centre pixel of each window."""
        k, s, d = self.kernel_size, self.stride, self.dilation
        out_h, out_w = (
            (size + 2 * self.padding - d * (k - 1) - 1) // s + 1 for size in x.shape[-2:]
        )
        centre = d * (k - 1) // 2
        centres = F.pad(x, (self.padding,) * 4)[..., centre:, centre:][..., ::s, ::s][..., :out_h, :out_w]
        weights = self.generator(centres)
        return weights.view(x.shape[0], self.out_channels, self.in_channels, k, k, out_h, out_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.filters(x)
        batch, _, _, k, _, out_h, out_w = weights.shape
        patches = F.unfold(x, k, dilation=self.dilation, padding=self.padding, stride=self.stride)
        patches = patches.view(batch, self.in_channels * k * k, out_h * out_w)
        weights = weights.view(batch, self.out_channels, self.in_channels * k * k, out_h * out_w)
        output = torch.einsum("bonp,bnp->bop", weights, patches).view(batch, self.out_channels, out_h, out_w)
        return output if self.bias is None else output + self.bias.view(1, -1, 1, 1)


class _ExpertMixtureConv2d(nn.Module):
    """A per-image kernel sum_e r[b,e] W_e (and bias), applied to all images at once as a grouped conv."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, num_experts):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.num_experts = num_experts
        self.experts = nn.Parameter(torch.empty(num_experts, out_channels, in_channels, kernel_size, kernel_size))
        self.expert_bias = nn.Parameter(torch.empty(num_experts, out_channels)) if bias else None
        for expert in range(num_experts):  # each expert initialised as nn.Conv2d initialises its weight
            nn.init.kaiming_uniform_(self.experts.data[expert], a=math.sqrt(5))
        if self.expert_bias is not None:
            bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
            nn.init.uniform_(self.expert_bias, -bound, bound)

    def routing(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, num_experts) mixture weights from the globally average-pooled input (B, in)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        mixture = self.routing(x.mean(dim=(2, 3)))
        weight = torch.einsum("be,eoikl->boikl", mixture, self.experts)
        weight = weight.reshape(batch * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        bias = None if self.expert_bias is None else (mixture @ self.expert_bias).flatten()
        output = F.conv2d(
            x.reshape(1, batch * self.in_channels, *x.shape[-2:]),
            weight,
            bias,
            self.stride,
            self.padding,
            self.dilation,
            groups=batch,
        )
        return output.view(batch, self.out_channels, *output.shape[-2:])


class CondConv2d(_ExpertMixtureConv2d):
    """CondConv: routing r = sigmoid(FC(GAP(x))), experts mixed independently."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 num_experts=4):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, num_experts)
        self.router = nn.Linear(in_channels, num_experts)

    def routing(self, pooled):
        return torch.sigmoid(self.router(pooled))


class DynamicConv2d(_ExpertMixtureConv2d):
    """DY-conv: attention pi = softmax(FC(ReLU(FC(GAP(x)))) / temperature), experts summing to one kernel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 num_experts=4, reduction=4, temperature=30.0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, num_experts)
        hidden = max(in_channels // reduction, 4)
        self.attention = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_experts)
        )
        self.temperature = temperature  # the paper anneals it from 30 to 1 over the first epochs

    def routing(self, pooled):
        return torch.softmax(self.attention(pooled) / self.temperature, dim=1)


def dfn_filter_bytes(batch, in_channels, out_channels, kernel_size, out_h, out_w, element_size=4) -> int:
    """Bytes of DFN's generated filters (kept for backward, and their gradient): its dominant tensors."""
    return 2 * batch * out_channels * in_channels * kernel_size**2 * out_h * out_w * element_size


BASELINES = {"dfn": DynamicFilterConv2d, "condconv": CondConv2d, "dyconv": DynamicConv2d}
