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
    assert _count(model, ACDAConv2d) == len(convs_3x3)
    assert isinstance(model.conv1, nn.Conv2d)  # 7x7 not requested
    assert model.layer1[0].downsample is None and isinstance(model.layer2[0].downsample[0], nn.Conv2d)
    assert model.layer2[0].conv1.stride == 2 and model.layer2[0].conv1.num_atoms == 4
    output = model(x)
    assert output.shape == expected_shape
    output.sum().backward()


def test_to_acda_skips_grouped_non_square_and_padding_modes():
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=2, padding=1),
        nn.Conv2d(4, 4, (3, 5), padding=(1, 2)),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 4, 5, padding="same", bias=False),
    )
    to_acda(model)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Conv2d, nn.Conv2d, nn.Conv2d, ACDAConv2d]
    assert model[3].padding == 2 and model[3].bias is None
    assert model(torch.randn(1, 4, 9, 9)).shape == (1, 4, 9, 9)


def test_to_acda_follows_dtype():
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1)).double()
    to_acda(model)
    assert model[0].coefficients.dtype == torch.float64
