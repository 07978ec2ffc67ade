"""The torchvision zoo through to_acda: every model converts (grouped and depthwise convs included),
keeps its output shape and trains a step. Random weights, 64x64 input, nothing downloaded."""

import pytest
import torch
import torchvision
from torch import nn

from acda_lightning.nn import ACDAConv2d, to_acda

# (model, its depthwise convs that must become depthwise ACDA layers). CPU seconds per model (convert
# + one step, 2 threads): densenet121 14, efficientnet_b0 11, convnext_tiny 10, regnet_y_400mf 8, resnet50 7,
# mobilenet_v3_small 6, vgg11_bn 5, resnet18 5. densenet121 (58 converted 3x3 layers) and resnet50 (the
# same conversions as resnet18) run with -m slow, keeping the default run near 45 CPU seconds.
ZOO = [
    ("resnet18", 0),
    pytest.param("resnet50", 0, marks=pytest.mark.slow),
    ("vgg11_bn", 0),
    pytest.param("densenet121", 0, marks=pytest.mark.slow),
    ("mobilenet_v3_small", 11),
    ("efficientnet_b0", 16),
    ("convnext_tiny", 18),
    ("regnet_y_400mf", 0),
]


def _is_depthwise(layer) -> bool:
    return layer.groups == layer.in_channels == layer.out_channels > 1


@pytest.mark.parametrize("name, depthwise", ZOO)
def test_zoo_model_converts_keeps_its_output_shape_and_trains_a_step(name, depthwise):
    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    grouped = {n for n in convs if model.get_submodule(n).groups > 1}
    x, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 7])
    with torch.no_grad():
        expected_shape = model.eval()(x).shape
    to_acda(model.train())
    report = model.acda_conversion
    assert set(report.converted) | set(report.skipped) == convs  # every conv accounted for, with a reason
    assert all(report.skipped.values())
    assert not grouped & set(report.skipped), f"grouped convs skipped: {sorted(grouped & set(report.skipped))}"
    layers = {n: model.get_submodule(n) for n in report.converted}
    assert all(isinstance(layer, ACDAConv2d) for layer in layers.values()) and layers
    assert sum(_is_depthwise(layer) for layer in layers.values()) == depthwise

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    output = model(x)
    assert output.shape == expected_shape
    loss = nn.functional.cross_entropy(output, labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
