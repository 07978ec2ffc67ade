"""Every registered model runs forward and backward (timm's test_models pattern)."""

import pytest
import torch

from acda_lightning.models import ad_resnet_trunk, create_model, list_models

# Input channels per model family (default: RGB images); the toy detectors read one-channel maps.
INPUT_CHANNELS = {"toy_detector": 1}
# Building and stepping the two larger Ad-ResNets (9-53M parameters) takes 10-30 s each on a shared
# 2-core CPU: they run as slow tests; ad_resnet_s covers the same code in the default run.
LARGE_MODELS = {"ad_resnet_m", "ad_resnet_l"}
EVERY_MODEL = [pytest.param(name, marks=pytest.mark.slow) if name in LARGE_MODELS else name for name in list_models()]
# (model, input size, precision): also slow are Ad-ResNet-s under CPU bf16 autocast (20 s: its
# depthwise convolutions have no fast bf16 CPU path).
FAST_CASES = {("lenet", 32, "bf16"), ("lenet", 224, "fp32"), ("ad_resnet_s", 224, "fp32")}
CLASSIFIER_CASES = [
    pytest.param(name, size, precision, marks=[] if (name, size, precision) in FAST_CASES else [pytest.mark.slow])
    for name in list_models("lenet") + list_models("ad_resnet_*")
    for size, precision in ((32, "bf16"), (224, "fp32"))
]


def _forward_backward(model, x):
    x.requires_grad_(True)
    output = model(x)
    output.float().square().mean().backward()
    assert torch.isfinite(output).all()
    assert x.grad is not None
    assert all(p.grad is not None for p in model.parameters())
    return output


@pytest.mark.parametrize("name", EVERY_MODEL)
@pytest.mark.parametrize("conv", ["conv", "acda"])
def test_model_forward_backward(name, conv):
    model = create_model(name, conv=conv)
    output = _forward_backward(model, torch.randn(2, INPUT_CHANNELS.get(name, 3), 24, 20))
    assert output.shape[0] == 2


@pytest.mark.parametrize("name, size, precision", CLASSIFIER_CASES)
@pytest.mark.parametrize("conv", ["conv", "acda"])
def test_classifier_on_cifar_and_imagenet_sizes(name, conv, size, precision):
    """Logits (B, num_classes) on 32x32 under CPU bf16 autocast and on 224x224 in fp32."""
    model = create_model(name, conv=conv, num_classes=7)
    x = torch.randn(2 if size == 32 else 1, 3, size, size)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        output = _forward_backward(model, x)
    assert output.shape == (x.shape[0], 7)


@pytest.mark.parametrize("variant", ["s", *(pytest.param(v, marks=pytest.mark.slow) for v in ("m", "l"))])
def test_ad_resnet_trunk_says_what_it_returns(variant):
    for maxpool in (True, False):
        trunk = ad_resnet_trunk(variant, maxpool=maxpool)
        with torch.no_grad():
            features = trunk(torch.randn(1, 3, 64, 96))
        assert features.shape == (1, trunk.out_channels, 64 // trunk.output_stride, 96 // trunk.output_stride)
    assert trunk.output_stride == 16


def test_classifier_trunk_weights_load_into_a_crowd_trunk():
    """A classification checkpoint's net.trunk.* state dict fits the trunk without max-pool exactly."""
    classifier = create_model("ad_resnet_s", num_classes=10)
    trunk = ad_resnet_trunk("s", maxpool=False)
    trunk.load_state_dict(classifier.trunk.state_dict(), strict=True)
    for name, tensor in trunk.state_dict().items():
        assert torch.equal(tensor, classifier.trunk.state_dict()[name])


def test_ad_resnet_uses_acda_only_in_conv3_and_conv4():
    from acda_lightning.nn import ACDAConv2d

    model = create_model("ad_resnet_s")
    kernels = [(name.split(".")[2], module.kernel_size) for name, module in model.named_modules() if isinstance(module, ACDAConv2d)]
    assert kernels == [("2", 7), ("2", 7), ("3", 5), ("3", 5)]  # trunk.stages.<index>: Conv3_x 7x7, Conv4_x 5x5
    assert not any(isinstance(m, ACDAConv2d) for m in create_model("ad_resnet_s", conv="conv").modules())


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(ValueError, match="toy_detector"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", ["toy_detector", "lenet", "ad_resnet_s"])
def test_standard_conv_models_reject_acda_arguments(name):
    with pytest.raises(ValueError, match="no ACDA arguments"):
        create_model(name, conv="conv", num_atoms=3)


def _models_lines(capsys, pattern: str) -> dict[str, str]:
    from acda_lightning.cli import main

    main(["models", pattern])
    return {" ".join(line.split()[:2]): line for line in capsys.readouterr().out.splitlines()[1:]}


def test_models_command_prints_ours_beside_the_papers(capsys):
    """Counts checked by hand on the one-layer toy nets; the paper's Table 2/7 counts beside Ad-ResNet-s's."""
    toy = _models_lines(capsys, "toy_detector")
    # one 7x7 conv 1 -> 1; ACDA: coefficients 1*1*6, bias 1, generator 1x1 conv 1->64, BN 64+64, 3x3 conv 64->6*18
    assert toy["toy_detector conv"].split()[2] == f"{7 * 7 + 1:,d}"
    assert toy["toy_detector acda"].split()[2] == f"{6 + 1 + (64 + 64) + 2 * 64 + (64 * 108 * 9 + 108):,d}"
    lines = _models_lines(capsys, "ad_resnet_s")
    for conv, papers in (("acda", {"Table 2": 3.85e6, "Table 7": 2.28e6}), ("conv", {"Table 7": 4.60e6})):
        line = lines[f"ad_resnet_s {conv}"]
        count = int(line.split()[2].replace(",", ""))
        for table, value in papers.items():  # the paper's count, and ours relative to it
            assert f"{value / 1e6:.2f}M {table} ({100 * (count / value - 1):+.1f}%)" in line


def test_models_command_names_the_models_when_a_pattern_matches_none(monkeypatch, capsys):
    from acda_lightning.cli import run

    monkeypatch.setattr("sys.argv", ["acda", "models", "resnet*"])
    assert run() == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("acda: error: no registered model matches 'resnet*'; the models: ad_resnet_l")
