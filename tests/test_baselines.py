"""Dynamic-convolution baselines: nn.Conv2d's geometry, gradients, and each one's defining formula."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acda_lightning.nn.baselines import BASELINES, CondConv2d, DynamicConv2d, DynamicFilterConv2d


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("kernel_size, stride, padding, dilation", [(3, 1, 1, 1), (5, 2, 2, 1), (3, 2, 0, 2)])
def test_shape_equals_conv2d_and_gradients_flow(name, kernel_size, stride, padding, dilation):
    layer = BASELINES[name](3, 5, kernel_size, stride=stride, padding=padding, dilation=dilation)
    conv = nn.Conv2d(3, 5, kernel_size, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 11, 9, requires_grad=True)
    output = layer(x)
    assert output.shape == conv(x).shape
    output.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    trained = [p for p in layer.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(trained) >= 2  # the filters and what generates or routes them


def test_dfn_equals_naive_per_pixel_formula():
    layer = DynamicFilterConv2d(2, 3, 3, stride=2, padding=1, dilation=1)
    nn.init.normal_(layer.generator[-1].weight, std=0.1)  # make the filters vary per pixel
    x = torch.randn(1, 2, 7, 6)
    filters = layer.filters(x)  # (B, O, C, k, k, Ho, Wo)
    xpad = F.pad(x, (1, 1, 1, 1))
    expected = torch.empty(1, 3, *filters.shape[-2:])
    for i in range(filters.shape[-2]):
        for j in range(filters.shape[-1]):
            window = xpad[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            expected[:, :, i, j] = torch.einsum("bocuv,bcuv->bo", filters[..., i, j], window) + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert (filters[..., 0, 0] - filters[..., 1, 2]).abs().max() > 1e-3


def test_dfn_starts_as_its_static_convolution():
    layer = DynamicFilterConv2d(2, 3, 5, padding=2).eval()
    x = torch.randn(1, 2, 8, 8)
    static = layer.generator[-1].bias.view(3, 2, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, static, layer.bias, padding=2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [CondConv2d, DynamicConv2d])
def test_expert_mixture_is_one_conv_per_image(cls):
    layer = cls(4, 6, 3, padding=1, num_experts=3)
    x = torch.randn(2, 4, 6, 6)
    output = layer(x)
    for b in range(2):
        mixture = layer.routing(x[b : b + 1].mean(dim=(2, 3)))[0]
        weight = torch.einsum("e,eoikl->oikl", mixture, layer.experts)
        bias = mixture @ layer.expert_bias
        torch.testing.assert_close(output[b : b + 1], F.conv2d(x[b : b + 1], weight, bias, padding=1))
    if cls is DynamicConv2d:  # attention over experts sums to one
        torch.testing.assert_close(layer.routing(x.mean(dim=(2, 3))).sum(1), torch.ones(2))
