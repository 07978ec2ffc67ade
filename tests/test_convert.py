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
        nn.Conv2d(4, 4, 4, groups=4, padding=2),
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
        "0": "kernel size 4 not requested (kernel_sizes=[3, 5, 7])",
        "1": "non-square kernel (3, 5)",
        "2": "padding_mode='reflect' (ACDA pads with zeros)",
        "3": "_Strict is a subclass of nn.Conv2d",
        "4": "unequal padding (1, 0)",
    }
    assert model.acda_conversion.converted == ["5"]
    assert "converted 1 conv(s), skipped 5" in caplog.text and "kernel size 4 not requested" in caplog.text


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
    to_acda(model, kernel_sizes=(3, 7))  # 3 would match every generator's last conv
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
    weight = torch.einsum("oca,ap->ocp", torch.randn(5, 4, 2), torch.randn(2, layer.num_bases) @ layer.bases.flatten(1))
    model = nn.Sequential(nn.Conv2d(4, 5, 5, padding=2))
    with torch.no_grad():
        model[0].weight.copy_(weight.view(5, 4, 5, 5))
    x = torch.randn(2, 4, 9, 9)
    expected = model(x)
    to_acda(model, init="conv", num_atoms=2)
    assert model.acda_conversion.filter_errors["0"] < 1e-5
    torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("in_channels, out_channels, groups", [(4, 4, 4), (4, 6, 2), (3, 6, 3)])
def test_grouped_and_depthwise_convs_convert_and_conv_init_projects_them(in_channels, out_channels, groups):
    # bases=None and 9 atoms: the atoms (shared by the groups) span every 3x3 filter, so the projection is exact.
    model = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=groups)).double()
    x = torch.randn(2, in_channels, 8, 8, dtype=torch.float64)
    expected = model(x)
    to_acda(model, init="conv", bases=None, num_atoms=9)
    layer = model[0]
    assert isinstance(layer, ACDAConv2d) and layer.groups == groups and model.acda_conversion.converted == ["0"]
    assert model.acda_conversion.filter_errors["0"] < 1e-10
    torch.testing.assert_close(model(x), expected)


def test_conv_init_refuses_the_released_generator_and_unknown_inits():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1))
    with pytest.raises(ValueError, match="generator='paper'"):
        to_acda(model, init="conv", generator="release")
    with pytest.raises(ValueError, match="init must be one of"):
        to_acda(model, init="kaiming")
    assert type(model[0]) is nn.Conv2d


def _bars_and_blobs(count, size=16):
    """Four classes of noisy 1-channel images: a horizontal bar, a vertical bar, a diagonal, a blob."""
    labels = torch.randint(0, 4, (count,))
    images = 0.3 * torch.randn(count, 1, size, size)
    centres = torch.randint(3, size - 3, (count, 2)).tolist()
    for image, label, (row, col) in zip(images, labels.tolist(), centres):
        if label == 0:
            image[0, row, col - 3 : col + 4] += 1
        elif label == 1:
            image[0, row - 3 : row + 4, col] += 1
        elif label == 2:
            image[0, torch.arange(row - 2, row + 3), torch.arange(col - 2, col + 3)] += 1
        else:
            image[0, row - 1 : row + 2, col - 1 : col + 2] += 1
    return images, labels


def test_conv_init_keeps_a_trained_network_s_accuracy():
    """A 2-conv network trained here on bars and blobs, converted before any fine-tuning.
    Measured: test accuracy 100.0 % -> 98.6 %, logits within 18 % (relative norm), filter errors
    0.30 / 0.31. With the Fourier-Bessel bases (6 smooth dimensions of 9): errors 0.55 / 0.52, 75.2 %."""
    images, labels = _bars_and_blobs(256)
    test_images, test_labels = _bars_and_blobs(512)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    # Without bases the span is every 3x3 filter, and 6 atoms keep the 6 strongest directions of 9.
    converted = to_acda(copy.deepcopy(net), init="conv", bases=None)
    assert len(converted.acda_conversion.converted) == 2
    assert all(0 < error < 0.35 for error in converted.acda_conversion.filter_errors.values())
    with torch.no_grad():
        logits, converted_logits = net(test_images), converted(test_images)
    accuracy = (logits.argmax(1) == test_labels).float().mean().item()
    converted_accuracy = (converted_logits.argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9
    assert converted_accuracy > accuracy - 0.03
    assert (converted_logits - logits).norm() / logits.norm() < 0.25


def _train_on_a_fixed_batch(model, steps=15):
    torch.manual_seed(1)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def test_converted_resnet18_trains_like_the_plain_one():
    """The issue's check: 15 SGD steps on one fixed batch, from the same initial weights.
    Both losses approach 0, hence the 1e-3 slack. Measured: converted (default init) 2.85 -> 0.0010,
    plain 2.79 -> ~0.001 (gamma 1 in the generator: 0.66; the old bias-sized atoms: 1.43 after 20 steps)."""
    plain = torchvision.models.resnet18(num_classes=10)
    converted = to_acda(copy.deepcopy(plain), kernel_sizes=(3,))
    plain_loss, converted_loss = _train_on_a_fixed_batch(plain), _train_on_a_fixed_batch(converted)
    assert converted_loss <= 1.5 * plain_loss + 1e-3
