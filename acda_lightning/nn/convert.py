"""Swap nn.Conv2d layers of any model for ACDAConv2d: atomic, idempotent, and saying what it skipped."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .acda import ACDAConv2d

INITS = ("default", "conv")

log = logging.getLogger(__name__)


@dataclass
class ConversionReport:
    """What ``to_acda`` did, by qualified module name; stored as ``model.acda_conversion``."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was left alone
    filter_errors: dict[str, float] = field(default_factory=dict)  # init="conv": |W - W_acda| / |W|

    def summary(self) -> str:
        lines = [f"to_acda: converted {len(self.converted)} conv(s), skipped {len(self.skipped)}"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped.items()]
        lines += [f"  {name}: relative filter error {error:.3g}" for name, error in self.filter_errors.items()]
        return "\n".join(lines)


def _skip_reason(conv: nn.Conv2d, kernel_sizes: set[int]) -> str | None:
    """Why ``conv`` cannot become an ACDAConv2d of the same function and geometry (None: it can)."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is a subclass of nn.Conv2d"
    (k_h, k_w), (s_h, s_w), (d_h, d_w) = conv.kernel_size, conv.stride, conv.dilation
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (ACDA pads with zeros)"
    if k_h != k_w:
        return f"non-square kernel {conv.kernel_size}"
    if k_h not in kernel_sizes:
        return f"kernel size {k_h} not requested (kernel_sizes={sorted(kernel_sizes)})"
    if s_h != s_w or d_h != d_w:
        return f"unequal stride {conv.stride} or dilation {conv.dilation}"
    if conv.padding == "same" and d_h * (k_h - 1) % 2:
        return "padding='same' with an even kernel pads one side more (ACDA pads both sides equally)"
    if isinstance(conv.padding, tuple) and conv.padding[0] != conv.padding[1]:
        return f"unequal padding {conv.padding}"
    return None


def _symmetric_padding(conv: nn.Conv2d) -> int:
    if conv.padding == "same":
        return conv.dilation[0] * (conv.kernel_size[0] - 1) // 2
    if conv.padding == "valid":
        return 0
    return conv.padding[0]


def _conv_slots(module: nn.Module, prefix: str = "") -> Iterator[tuple[nn.Module, str, str, nn.Module]]:
    """(parent, attribute, qualified name, child) for every nn.Conv2d and ACDAConv2d below ``module``,
    without entering ACDA layers: their generator convs are never candidates."""
    for attribute, child in module._modules.items():  # named_children() would hide a shared second use
        name = f"{prefix}.{attribute}" if prefix else attribute
        if isinstance(child, (nn.Conv2d, ACDAConv2d)):
            yield module, attribute, name, child
        elif child is not None:
            yield from _conv_slots(child, name)


def _static_filter(layer: ACDAConv2d) -> torch.Tensor:
    """(O, C/groups, k, k): the filter the layer applies everywhere while its generator's last weights are zero."""
    alpha = layer.atom_generator[-1].bias.view(layer.num_atoms, layer.num_bases)
    k = layer.kernel_size
    atoms = alpha.view(-1, k, k) if layer.bases is None else torch.einsum("mK,Kuv->muv", alpha, layer.bases)
    return torch.einsum("oca,auv->ocuv", layer.coefficients, atoms)


def _fit_conv_weight(layer: ACDAConv2d, weight: torch.Tensor) -> None:
    """Make the layer's static filter the best one it can express for ``weight`` (Frobenius norm):
    project every (o, c) filter onto the bases' span, then take the best rank-``num_atoms``
    factorisation of those projections (SVD) into A and constant, unit-norm atoms."""
    out_channels, group_channels, k, _ = weight.shape  # group_channels = C/groups
    filters = weight.detach().to(torch.float64).reshape(out_channels * group_channels, k * k)
    if layer.bases is None:
        bases = torch.eye(k * k, dtype=torch.float64, device=filters.device)
    else:
        bases = layer.bases.to(torch.float64).flatten(1)  # (K, k*k)
    # An orthonormal frame of the span (the right singular vectors of the bases that carry energy),
    # so the truncated SVD below is the best approximation in filter space, not in basis coordinates.
    _, singular, frame = torch.linalg.svd(bases, full_matrices=False)
    frame = frame[singular > singular[0] * 1e-8]  # (r, k*k)
    left, strengths, directions = torch.linalg.svd(filters @ frame.T, full_matrices=False)
    kept = min(layer.num_atoms, strengths.numel())
    coefficients = torch.zeros(out_channels * group_channels, layer.num_atoms, dtype=torch.float64, device=filters.device)
    coefficients[:, :kept] = left[:, :kept] * strengths[:kept]
    atoms = torch.randn(layer.num_atoms, frame.shape[0], dtype=torch.float64, device=filters.device)
    atoms = atoms / atoms.norm(dim=1, keepdim=True)  # atoms beyond the rank: unit norm, A zero
    atoms[:kept] = directions[:kept]
    alpha = atoms @ frame @ torch.linalg.pinv(bases)  # basis coefficients of the atoms, (m, K)
    with torch.no_grad():
        layer.coefficients.copy_(coefficients.view(out_channels, group_channels, layer.num_atoms))
        layer.atom_generator[-1].bias.copy_(alpha.flatten())
        layer.atom_generator[-1].weight.zero_()


# gamma of the generator's hidden BatchNorm in converted layers. The per-pixel path learns through
# h = ReLU(BN(.)), so one SGD step moves alpha by ~gamma^2 * |h|^2; with gamma = 1 that path
# outran the conv weights on a converted resnet18 and stalled training (20 SGD steps on a fixed batch:
# loss 2.55 -> 0.82 against the plain net's 0.0005; gamma 0.5 or 0.3: 0.0007; a per-layer rule
# min(1, sqrt(2Ck^2 / (9 gen_hidden K))), 0.58 at 64 channels and 1 from 256 on: 0.66 after 15 steps
# with batch 8, where gamma 0.5 reaches 0.0010). A single
# ACDA layer (the toy study) needs the fast path and is stable, so ACDAConv2d itself keeps gamma = 1.
CONVERTED_GENERATOR_GAMMA = 0.5


def _relative_error(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    norm = reference.double().norm()
    error = (reference.double() - approximation.double()).norm()
    return 0.0 if norm == 0 else (error / norm).item()


def _replacement(conv: nn.Conv2d, init: str, acda_kwargs: dict) -> tuple[ACDAConv2d, float | None]:
    """The ACDA layer for ``conv`` (same geometry, device, dtype and train/eval mode), and its
    relative filter error for init="conv"."""
    layer = ACDAConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        stride=conv.stride[0],
        padding=_symmetric_padding(conv),
        dilation=conv.dilation[0],
        bias=conv.bias is not None,
        groups=conv.groups,
        **acda_kwargs,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    layer.train(conv.training)
    error = None
    if layer.generator == "paper":
        nn.init.constant_(layer.atom_generator[1].weight, CONVERTED_GENERATOR_GAMMA)
    if init == "conv":
        _fit_conv_weight(layer, conv.weight)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        error = _relative_error(conv.weight, _static_filter(layer))
    elif layer.generator == "paper":
        # Match the replaced conv's filter energy, whatever scheme initialised it (torchvision's
        # ResNets use Kaiming fan_out, 2.4x nn.Conv2d's default): the output std then follows it.
        with torch.no_grad():
            static_norm = _static_filter(layer).norm()
            if static_norm > 0:
                layer.coefficients.mul_(conv.weight.norm() / static_norm)
    return layer, error


def to_acda(
    model: nn.Module, kernel_sizes: Iterable[int] = (3, 5, 7), init: str = "default", **acda_kwargs
) -> nn.Module:
    """Replace, in place, every plain ``nn.Conv2d`` of ``model`` that ACDA can stand in for by an
    ``ACDAConv2d`` with the same geometry, device, dtype and mode; returns ``model``.

    Converts convs (grouped and depthwise ones too) with zero padding, a square kernel whose size is in
    ``kernel_sizes``, equal strides, dilations and paddings; every other conv is left as it is
    and listed, with the reason, in ``model.acda_conversion.skipped`` (also logged at INFO).
    All replacements are built before any is swapped in, so an error leaves the model
    untouched; existing ACDA layers (and their generators' convs) are never converted, so a
    second call changes nothing. A conv shared by several parents gets one shared ACDA layer.

    ``init="default"``: the ACDA init with A rescaled so each layer's static filter has the
    replaced conv's Frobenius norm (same output scale) and the generator's BatchNorm gamma at
    ``CONVERTED_GENERATOR_GAMMA`` (both inits, "paper" generator). ``init="conv"``: each layer starts as
    the best static approximation of the replaced conv (its weight projected onto the bases'
    span, then the best rank-``num_atoms`` factorisation); the relative filter errors are in
    ``model.acda_conversion.filter_errors``. ``acda_kwargs`` go to ``ACDAConv2d``.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "conv" and acda_kwargs.get("generator", "paper") != "paper":
        raise ValueError(
            "init='conv' needs generator='paper': the released generator ends in BatchNorm + Tanh, "
            "which rescales any per-pixel variation of alpha to unit variance, so it cannot start as a "
            "static convolution"
        )
    if isinstance(model, (nn.Conv2d, ACDAConv2d)):
        raise ValueError("to_acda replaces convs inside a model; wrap a single conv in nn.Sequential first")
    sizes = set(kernel_sizes)
    report = ConversionReport()
    swaps = []
    replacements: dict[int, ACDAConv2d] = {}
    for parent, attribute, name, child in _conv_slots(model):
        if isinstance(child, ACDAConv2d):
            report.skipped[name] = "already an ACDAConv2d"
            continue
        reason = _skip_reason(child, sizes)
        if reason is not None:
            report.skipped[name] = reason
            continue
        if id(child) not in replacements:
            layer, error = _replacement(child, init, acda_kwargs)
            replacements[id(child)] = layer
            if error is not None:
                report.filter_errors[name] = error
        swaps.append((parent, attribute, replacements[id(child)]))
        report.converted.append(name)
    for parent, attribute, layer in swaps:
        setattr(parent, attribute, layer)
    model.acda_conversion = report
    log.info(report.summary())
    return model
