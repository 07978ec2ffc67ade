"""Grouped and depthwise ACDAConv2d: nn.Conv2d(groups=g) geometry, the naive reference, equivariance."""

import inspect
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acda_lightning.nn import ACDAConv2d
from acda_lightning.nn.kernels import IMPLEMENTATIONS, device_impls, fused

from helpers import assert_every_impl_matches_the_reference, randomised, reference_and_grads


def reference_output(layer, x):
    return reference_and_grads(layer, x, None)[0]

IMPLS = device_impls("cpu")


# (in, out, groups): grouped, depthwise (g = C = O) and depthwise with a channel multiplier (O = 2C)
CHANNELS = [(4, 6, 2), (6, 6, 3), (4, 4, 4), (3, 6, 3)]
# (kernel, stride, dilation, bias): each stride, dilation and bias setting with both kernel sizes
GEOMETRY = [(3, 1, 1, True), (5, 2, 1, False), (3, 2, 2, False), (5, 1, 2, True)]


@pytest.mark.parametrize("in_channels, out_channels, groups", CHANNELS)
@pytest.mark.parametrize("kernel_size, stride, dilation, bias", GEOMETRY)
def test_every_impl_equals_the_grouped_reference_forward_and_gradients(
    in_channels, out_channels, groups, kernel_size, stride, dilation, bias
):
    layer = ACDAConv2d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias, groups=groups)
    layer = randomised(layer).double()
    assert layer.coefficients.shape == (out_channels, in_channels // groups, layer.num_atoms)
    x = torch.randn(2, in_channels, 7, 6, dtype=torch.float64, requires_grad=True)
    shape = nn.Conv2d(in_channels, out_channels, kernel_size, stride, layer.padding, dilation, groups)(x.float()).shape
    cotangent = torch.randn(shape, dtype=torch.float64)
    # each implementation computes groups itself (none hands a grouped layer to another)
    assert all("groups" in inspect.signature(IMPLEMENTATIONS[impl]).parameters for impl in IMPLS), IMPLS
    assert_every_impl_matches_the_reference(layer, x, cotangent, IMPLS)


@pytest.mark.parametrize("impl", IMPLS)
def test_grouped_implementations_take_groups(impl):
    """The kernel-call interface: an implementation that computes grouped ACDA says so and takes groups=."""
    implementation = IMPLEMENTATIONS[impl]
    assert "groups" in inspect.signature(implementation).parameters
    layer = randomised(ACDAConv2d(4, 4, 3, groups=4)).double()
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    alpha = layer.basis_coefficients(x)
    output = implementation(x, alpha, layer.bases.double(), layer.coefficients, layer.bias, 1, 1, 1, 3, groups=4)
    torch.testing.assert_close(output, reference_output(layer, x))


@pytest.mark.parametrize("padding", [0, 1, 3])
def test_static_depthwise_acda_is_the_depthwise_conv_of_its_filter(padding):
    """While the generator's last weights are zero the atoms are constant, and depthwise ACDA must be
    exactly nn.Conv2d(groups=C) with the filter sum_a A[c, a] D_a (an independent check of the grouping)."""
    layer = ACDAConv2d(5, 5, 5, padding=padding, groups=5).double()
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    atoms = layer.dynamic_atoms(x)[..., 0, 0][0]  # (m, k, k), the same at every pixel
    weight = torch.einsum("oca,auv->ocuv", layer.coefficients, atoms)
    expected = F.conv2d(x, weight, layer.bias, padding=padding, groups=5)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_depthwise_translation_equivariance(impl):
    layer = randomised(ACDAConv2d(6, 6, 7, groups=6, impl=impl)).eval()
    dy, dx = 3, 5
    x = torch.randn(1, 6, 32, 32)
    shifted = F.pad(x, (dx, 0, dy, 0))[..., :32, :32]
    with torch.no_grad():
        y, y_shifted = layer(x), layer(shifted)
    margin = 3 + 2  # the kernel's half-width plus the generator's reach
    interior = y[..., margin : 32 - dy - margin, margin : 32 - dx - margin]
    moved = y_shifted[..., dy + margin : 32 - margin, dx + margin : 32 - margin]
    torch.testing.assert_close(moved, interior, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "in_channels, out_channels, groups, message",
    [
        (6, 4, 4, "in_channels=6 and groups=4"),
        (4, 6, 4, "out_channels=6 and groups=4"),
        (4, 4, 0, "groups must be a positive int"),
    ],
)
def test_groups_not_dividing_the_channels_raise_value_error(in_channels, out_channels, groups, message):
    with pytest.raises(ValueError, match=message):
        ACDAConv2d(in_channels, out_channels, 3, groups=groups)


def test_bench_layer_depthwise_times_depthwise_acda_against_depthwise_conv(capsys):
    from acda_lightning.cli import main

    main(["bench", "layer", "--groups", "depthwise", "--quick", "--impls", "basis", "fused", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)["layer_rows"]
    # the baselines have no depthwise form; "fused" computes groups itself (where its kernel builds)
    acda = {"acda_basis", "acda_fused"} if fused.available() else {"acda_basis"}
    assert {row["layer"] for row in rows} == {"conv", *acda}
    assert all(row["groups"] == row["channels"] for row in rows)
    conv = next(row for row in rows if row["layer"] == "conv" and row["mode"] == "forward_backward")
    assert conv["parameters"] == conv["channels"] * (conv["kernel_size"] ** 2 + 1)  # a depthwise conv's weights


def test_depthwise_study_puts_conv_and_acda_side_by_side(tmp_path, capsys):
    from acda_lightning.studies.classification import _depthwise_section
    from acda_lightning.studies.depthwise import main as depthwise_main
    from acda_lightning.studies.depthwise import markdown

    assert "not run" in _depthwise_section(tmp_path)
    settings = ["--train-images", "16", "--test-images", "8", "--epochs", "1", "--seeds", "0", "--channels", "8", "--size", "16"]
    depthwise_main(["--out", str(tmp_path / "depthwise"), *settings])
    result = json.loads((tmp_path / "depthwise" / "metrics.json").read_text())
    conv, acda = result["conv"], result["acda"]
    assert conv["mixer_parameters"] == 2 * 8 * (7 * 7 + 1)  # two depthwise 7x7 convs with bias
    acda_layer = ACDAConv2d(8, 8, 7, groups=8)
    assert acda["mixer_parameters"] == 2 * sum(p.numel() for p in acda_layer.parameters())
    assert acda["parameters"] - conv["parameters"] == acda["mixer_parameters"] - conv["mixer_parameters"]
    assert all(0 <= a <= 1 for a in conv["accuracy"] + acda["accuracy"])
    table = markdown(result)
    assert "depthwise 7x7 ACDA" in table and f"{acda['parameters']:,}" in table
    assert table in (tmp_path / "depthwise" / "report.md").read_text() and table in _depthwise_section(tmp_path)
