"""to_acda: geometry, skip report, atomicity, idempotence, init scale, init="conv", training parity."""

import copy
import logging

import pytest
import torch
import torchvision
from torch import nn

from acda_lightning.nn import ACDAConv2d, to_acda


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_to_acda_replaces_matching_convs_and_keeps_geometry():
    model = torchvision.models.resnet18(num_classes=10)
    convs_3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    x = torch.randn(2, 3, 64, 64)
    expected_shape = model(x).shape
    returned = to_acda(model, kernel_sizes=(3,), num_atoms=4)
    assert returned is model
    assert _count(model, ACDAConv2d) == len(convs_3x3) == len(model.acda_conversion.converted)
    assert isinstance(model.conv1, nn.Conv2d)  # 7x7 not requested
    assert model.acda_conversion.skipped["conv1"].startswith("kernel size 7 not requested")
    assert model.layer1[0].downsample is None and isinstance(model.layer2[0].downsample[0], nn.Conv2d)
    assert model.layer2[0].conv1.stride == 2 and model.layer2[0].conv1.num_atoms == 4
    output = model(x)
    assert output.shape == expected_shape
    output.sum().backward()


class _Strict(nn.Conv2d):
    pass


def test_to_acda_reports_every_skipped_conv_and_why(caplog):
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=2, padding=1),
        nn.Conv2d(4, 4, (3, 5), padding=(1, 2)),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        _Strict(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding=(1, 0)),
        nn.Conv2d(4, 4, 5, padding="same", bias=False),
    )
    with caplog.at_level(logging.INFO, logger="acda_lightning.nn.convert"):
        to_acda(model)
    assert [type(m) for m in model] == [nn.Conv2d, nn.Conv2d, nn.Conv2d, _Strict, nn.Conv2d, ACDAConv2d]
    assert model[5].padding == 2 and model[5].bias is None
    skipped = model.acda_conversion.skipped
    assert skipped == {
        "0": "grouped (groups=2)",
        "1": "non-square kernel (3, 5)",
        "2": "padding_mode='reflect' (ACDA pads with zeros)",
        "3": "_Strict is a subclass of nn.Conv2d",
        "4": "unequal padding (1, 0)",
    }
    assert model.acda_conversion.converted == ["5"]
    assert "converted 1 conv(s), skipped 5" in caplog.text and "grouped (groups=2)" in caplog.text


def test_even_kernel_same_padding_keeps_the_output_size_or_is_skipped():
    x = torch.randn(1, 2, 10, 10)
    asymmetric = nn.Sequential(nn.Conv2d(2, 2, 4, padding="same"))  # pads 1 before, 2 after
    to_acda(asymmetric, kernel_sizes=(4,), bases=None)
    assert type(asymmetric[0]) is nn.Conv2d and "even kernel" in asymmetric.acda_conversion.skipped["0"]
    assert asymmetric(x).shape[-2:] == (10, 10)
    symmetric = nn.Sequential(nn.Conv2d(2, 2, 4, padding="same", dilation=2))  # pads 3 on each side
    to_acda(symmetric, kernel_sizes=(4,), bases=None)
    assert isinstance(symmetric[0], ACDAConv2d) and symmetric(x).shape[-2:] == (10, 10)


def test_an_error_half_way_leaves_the_model_untouched():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 4, padding=1))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="odd kernel_size"):  # Fourier-Bessel bases need odd kernels
        to_acda(model, kernel_sizes=(3, 4))
    assert [type(m) for m in model] == [nn.Conv2d, nn.Conv2d]
    assert not hasattr(model, "acda_conversion")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_converting_twice_changes_nothing_and_never_touches_a_generator():
    model = to_acda(torchvision.models.resnet18(num_classes=10), kernel_sizes=(3, 7))
    keys = list(model.state_dict())
    first = model.acda_conversion
    to_acda(model, kernel_sizes=(1, 3, 7))
    assert model.acda_conversion.converted == []
    assert list(model.state_dict()) == keys
    assert all(model.acda_conversion.skipped[name] == "already an ACDAConv2d" for name in first.converted)
    for layer in (m for m in model.modules() if isinstance(m, ACDAConv2d)):
        assert all(not isinstance(m, ACDAConv2d) for m in layer.atom_generator)


def test_a_shared_conv_becomes_one_shared_layer_with_the_conv_mode_and_dtype():
    shared = nn.Conv2d(2, 2, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared).double().eval()
    to_acda(model)
    assert model[0] is model[2] and isinstance(model[0], ACDAConv2d)
    assert model[0].coefficients.dtype == torch.float64 and not model[0].training


def _conv_like_torchvision(in_channels, out_channels, kernel_size):
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


@pytest.mark.parametrize("kernel_size", [3, 7])
@pytest.mark.parametrize("make_conv", [nn.Conv2d, _conv_like_torchvision], ids=["default", "kaiming_fan_out"])
def test_default_init_output_std_matches_the_replaced_conv(make_conv, kernel_size):
    """Before: 0.02-0.05x the conv's std (resnet18). Now the static filter has the conv's norm."""
    model = nn.Sequential(make_conv(64, 64, kernel_size))
    x = torch.randn(4, 64, 16, 16)
    with torch.no_grad():
        conv_std = model(x).std()
        to_acda(model)
        ratio = (model(x).std() / conv_std).item()
    assert 0.7 < ratio < 1.4


def test_acda_layer_alone_matches_nn_conv2d_default_scale():
    x = torch.randn(4, 64, 16, 16)
    with torch.no_grad():
        ratio = ACDAConv2d(64, 64, 5)(x).std() / nn.Conv2d(64, 64, 5, padding=2)(x).std()
    assert 0.7 < ratio.item() < 1.4


def test_conv_init_is_exact_where_the_conv_is_in_the_span():
    # bases=None: the span is every 3x3 filter; 2*3 filters have rank <= 6 = num_atoms.
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    expected = model(x)
    to_acda(model, init="conv", bases=None, num_atoms=6)
    assert model.acda_conversion.filter_errors["0"] < 1e-10
    torch.testing.assert_close(model(x), expected)
    # Fourier-Bessel bases: a filter bank built from 2 atoms in their span is matched exactly.
    layer = ACDAConv2d(4, 5, 5, num_atoms=2)
    weight = torch.einsum("oca,auv->ocuv", torch.randn(5, 4, 2), torch.randn(2, layer.num_bases) @ layer.bases.flatten(1))
    model = nn.Sequential(nn.Conv2d(4, 5, 5, padding=2))
    with torch.no_grad():
        model[0].weight.copy_(weight.view(5, 4, 5, 5))
    x = torch.randn(2, 4, 9, 9)
    expected = model(x)
    to_acda(model, init="conv", num_atoms=2)
    assert model.acda_conversion.filter_errors["0"] < 1e-5
    torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


def test_conv_init_refuses_the_released_generator_and_unknown_inits():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1))
    with pytest.raises(ValueError, match="generator='paper'"):
        to_acda(model, init="conv", generator="release")
    with pytest.raises(ValueError, match="init must be one of"):
        to_acda(model, init="kaiming")
    assert type(model[0]) is nn.Conv2d
