"""Every registered model runs forward and backward (timm's test_models pattern)."""

import pytest
import torch

from acda_lightning.models import create_model, list_models


# (input shape, output shape) of a tiny forward pass, for models that do not map 1 channel to 1 channel.
SHAPES = {"sr_net": ((2, 3, 12, 10), (2, 3, 48, 40))}
DEFAULT_SHAPES = ((2, 1, 24, 20), (2, 1, 24, 20))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("conv", ["conv", "acda"])
def test_model_forward_backward(name, conv):
    model = create_model(name, conv=conv)
    input_shape, output_shape = SHAPES.get(name, DEFAULT_SHAPES)
    x = torch.randn(*input_shape, requires_grad=True)
    output = model(x)
    assert output.shape == output_shape
    output.square().mean().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(ValueError, match="toy_detector"):
        create_model("resnet9000")


def test_toy_detector_rejects_acda_arguments_for_conv():
    with pytest.raises(ValueError, match="no ACDA arguments"):
        create_model("toy_detector", conv="conv", num_atoms=3)
