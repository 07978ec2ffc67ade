"""impl="auto" on CUDA without a GPU: the policy reads a stand-in CUDA tensor and monkeypatched device facts;
the self-check's probe runs for real on CPU under Triton's interpreter (tests/conftest.py)."""

import warnings

import pytest
import torch

from acda_lightning import cli
from acda_lightning.nn import kernels
from acda_lightning.nn.kernels import resolve_impl, triton_acda


class CudaTensor:
    """What resolve_impl reads of a CUDA tensor: device, dtype, dim."""

    device = torch.device("cuda:0")
    shape = (2, 64, 32, 32)

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype

    def dim(self):
        return 4


@pytest.fixture
def ampere(monkeypatch):
    """An NVIDIA GPU of compute capability 8.0 with Triton compiling; every self-check passes and is counted."""
    probes = []

    def probe(*key):
        probes.append(key)
        return ""

    monkeypatch.setattr(triton_acda, "available", lambda device=None: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(kernels, "probe_mismatch", probe)
    monkeypatch.setattr(kernels, "_SELF_CHECKS", {})
    monkeypatch.delenv("ACDA_IMPL", raising=False)
    torch.use_deterministic_algorithms(False)  # the autouse fixture restores it
    return probes


def test_auto_picks_triton_after_one_self_check_per_key(ampere):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert resolve_impl("auto", CudaTensor(dtype), 3) == "triton"
    assert resolve_impl("auto", CudaTensor(), 3) == "triton"
    assert resolve_impl("auto", CudaTensor(), 3, stride=2) == "triton"
    assert resolve_impl("auto", CudaTensor(), 7, dilation=2) == "triton"
    assert [key[1:] for key in ampere] == [
        (torch.float32, 3, 1, 1), (torch.float16, 3, 1, 1), (torch.bfloat16, 3, 1, 1),
        (torch.float32, 3, 2, 1), (torch.float32, 7, 1, 2),
    ]
    assert resolve_impl("auto", CudaTensor(torch.float64), 3) == "basis"
    assert resolve_impl("basis", CudaTensor(), 3) == "basis"
    # grouped layers stay on basis until the grouped Triton path is timed; an explicit choice is kept
    assert resolve_impl("auto", CudaTensor(), 3, groups=4) == "basis"
    assert resolve_impl("triton", CudaTensor(), 3, groups=4) == "triton"


def test_failed_self_check_warns_once_and_uses_basis(ampere, monkeypatch):
    def broken(*key):
        raise RuntimeError("Failed to find C compiler")

    monkeypatch.setattr(kernels, "probe_mismatch", broken)
    with pytest.warns(RuntimeWarning, match=r"self-check on cuda:0 \(torch.float16, kernel_size=5.*C compiler"):
        assert resolve_impl("auto", CudaTensor(torch.float16), 5) == "basis"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_impl("auto", CudaTensor(torch.float16), 5) == "basis"


@pytest.mark.parametrize("device_facts", [
    {"capability": (7, 5)},  # Turing: no tensor cores for the kernel's dots
    {"hip": "6.2"},  # AMD: the fp16/bf16 path does not compile
    {"cudnn_deterministic": True},
    {"deterministic_algorithms": True},
    {"triton": False},  # Triton not importable, or its interpreter on
])
def test_auto_uses_basis_without_probing(ampere, monkeypatch, device_facts):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: device_facts.get("capability", (9, 0)))
    monkeypatch.setattr(torch.version, "hip", device_facts.get("hip"))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", device_facts.get("cudnn_deterministic", False))
    monkeypatch.setattr(triton_acda, "available", lambda device=None: device_facts.get("triton", True))
    torch.use_deterministic_algorithms(device_facts.get("deterministic_algorithms", False))
    assert resolve_impl("auto", CudaTensor(torch.bfloat16), 3) == "basis"
    assert ampere == []


@pytest.mark.parametrize("switch", ["use_deterministic_algorithms", "cudnn.deterministic"])
def test_explicit_triton_under_determinism_is_an_error(ampere, monkeypatch, switch):
    if switch == "cudnn.deterministic":
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    else:
        torch.use_deterministic_algorithms(True)
    with pytest.raises(RuntimeError, match="not known to be deterministic.*use impl='basis'"):
        resolve_impl("triton", CudaTensor(), 3)
    monkeypatch.setenv("ACDA_IMPL", "triton")
    with pytest.raises(RuntimeError, match="not known to be deterministic"):
        resolve_impl("auto", CudaTensor(), 3)


def test_acda_impl_environment_overrides_every_layer(ampere, monkeypatch):
    monkeypatch.setenv("ACDA_IMPL", "basis")
    assert resolve_impl("auto", CudaTensor(), 3) == "basis"
    assert resolve_impl("triton", CudaTensor(), 3) == "basis"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setenv("ACDA_IMPL", "triton")  # forced: no capability rule, no self-check
    assert resolve_impl("basis", CudaTensor(), 3) == "triton"
    monkeypatch.setenv("ACDA_IMPL", "auto")
    assert resolve_impl("triton", CudaTensor(), 3) == "basis"
    assert ampere == []


def test_acda_impl_bad_value_is_one_error_line(monkeypatch, capsys):
    """Through the console script: a typo in ACDA_IMPL is one `acda: error:` line naming the variable and its values."""
    monkeypatch.setenv("ACDA_IMPL", "trition")
    monkeypatch.setattr("sys.argv", ["acda", "bench", "layer", "--quick", "--impls", "basis"])
    assert cli.run() == 2
    error = capsys.readouterr().err
    assert "acda: error: ACDA_IMPL='trition'" in error and "auto, unfold, basis, fused, triton" in error


interpreted = pytest.mark.skipif(not triton_acda.available("cpu"), reason="Triton's interpreter is off")


@interpreted
@pytest.mark.parametrize("dtype, kernel_size, stride, dilation", [(torch.float32, 3, 2, 2), (torch.bfloat16, 5, 1, 1)])
def test_probe_of_the_real_kernel_passes(dtype, kernel_size, stride, dilation):
    assert kernels.probe_mismatch(torch.device("cpu"), dtype, kernel_size, stride, dilation) == ""


@interpreted
def test_probe_catches_a_wrong_gradient(monkeypatch):
    """A kernel whose grad_x is off by 1% of its largest value fails the fp32 probe, naming grad x."""
    backward = triton_acda.triton_acda_backward

    def skewed(*args):
        grad_x, grad_alpha, grad_a = backward(*args)
        return grad_x + 0.01 * grad_x.abs().max(), grad_alpha, grad_a

    monkeypatch.setattr(triton_acda, "triton_acda_backward", skewed)
    assert kernels.probe_mismatch(torch.device("cpu"), torch.float32, 3, 1, 1).startswith("grad x differs")
