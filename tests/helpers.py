"""Helpers several test files share (imported as ``from helpers import ...``: pytest puts tests/ on the path)."""

import socket

import numpy as np
import torch
from PIL import Image
from torch import nn

from acda_lightning.nn import acda_reference


def randomised(layer):
    """Random generator weights: the paper variant starts with a zero last layer (constant atoms), which
    would let a wrong per-pixel indexing pass unnoticed."""
    for module in layer.atom_generator:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.2)
    return layer


def reference_and_grads(layer, x, cotangent):
    """The naive per-pixel reference's output for ``layer`` on ``x`` and the gradients of <output, cotangent>
    with respect to x and every parameter (in ``layer.parameters()`` order); no gradients for ``cotangent=None``."""
    atoms = layer.dynamic_atoms(x)
    output = acda_reference(
        x, atoms, layer.coefficients, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    if cotangent is None:
        return output, None
    return output, torch.autograd.grad((output * cotangent).sum(), [x, *layer.parameters()])


def output_and_grads(layer, x, cotangent):
    """The same as ``reference_and_grads`` through the layer's own forward (its ``impl``)."""
    output = layer(x)
    return output, torch.autograd.grad((output * cotangent).sum(), [x, *layer.parameters()])


def assert_every_impl_matches_the_reference(layer, x, cotangent, impls) -> None:
    """``layer`` with each of ``impls`` gives the float64 reference's output and gradients (1e-10 / 1e-9)."""
    expected, expected_grads = reference_and_grads(layer, x, cotangent)
    for impl in impls:
        layer.impl = impl
        output, grads = output_and_grads(layer, x, cotangent)
        torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-10, msg=f"impl={impl}")
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=f"impl={impl} gradient")


def free_port() -> int:
    """A TCP port on localhost that nothing listens on, for a 2-process gloo group."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_png(path) -> torch.Tensor:
    """A PNG file's pixels as a (height, width[, channels]) uint8 tensor; fails on anything but a PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        return torch.from_numpy(np.array(image))


def assert_drawn_png(path, min_size: int = 64) -> None:
    """``path`` is a PNG of at least ``min_size`` pixels a side with something drawn on it (many colours),
    not an empty, truncated or blank file."""
    pixels = read_png(path)
    assert min(pixels.shape[:2]) >= min_size, f"{path}: {tuple(pixels.shape)}"
    colours = torch.unique(pixels.reshape(-1, pixels.shape[-1]) if pixels.ndim == 3 else pixels.flatten(), dim=0)
    assert len(colours) > 16, f"{path} is (nearly) blank: {len(colours)} colours"
