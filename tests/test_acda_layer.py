"""ACDAConv2d: every implementation against the naive per-pixel reference, shapes, equivariance."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acda_lightning.nn import ACDAConv2d
from acda_lightning.nn.kernels import IMPLEMENTATIONS, device_impls, fused, resolve_impl

from helpers import assert_every_impl_matches_the_reference, randomised

# Every impl that runs on CPU ("triton" is CUDA-only; tests/test_triton_kernel.py runs it under Triton's
# interpreter and, on a GPU, compiled).
IMPLS = device_impls("cpu")


MATRIX = list(
    itertools.product(
        [3, 5, 7],  # kernel size
        [1, 2],  # stride
        [1, 2],  # dilation
        [(7, 7), (8, 6)],  # odd and even H, W
        [True, False],  # bias
        ["fourier_bessel", None],
    )
)


@pytest.mark.parametrize("kernel_size, stride, dilation, size, bias, bases", MATRIX)
@pytest.mark.parametrize("generator", ["paper", "release"])
def test_every_impl_equals_reference_forward_and_gradients(
    kernel_size, stride, dilation, size, bias, bases, generator
):
    layer = randomised(
        ACDAConv2d(3, 4, kernel_size, stride=stride, dilation=dilation, bias=bias, bases=bases, generator=generator)
    ).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(2, 4, *layer.output_size(*size), dtype=torch.float64)
    assert_every_impl_matches_the_reference(layer, x, cotangent, IMPLS)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kernel_size, stride, dilation, use_bases",
    [(3, 1, 1, True), (5, 2, 1, True), (3, 1, 2, False), (4, 2, 1, False)],
)
def test_impl_gradcheck(impl, kernel_size, stride, dilation, use_bases):
    channels, out_channels, atoms = 2, 3, 2
    bases = ACDAConv2d(1, 1, kernel_size, bases="fourier_bessel" if use_bases else None).bases
    num_bases = kernel_size**2 if bases is None else bases.shape[0]
    bases = None if bases is None else bases.double()
    padding = dilation * (kernel_size - 1) // 2
    x = torch.randn(1, channels, 5, 6, dtype=torch.float64, requires_grad=True)
    out_h = (5 + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    out_w = (6 + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    alpha = torch.randn(1, atoms, num_bases, out_h, out_w, dtype=torch.float64, requires_grad=True)
    coefficients = torch.randn(out_channels, channels, atoms, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_channels, dtype=torch.float64, requires_grad=True)

    def fn(x, alpha, coefficients, bias):
        return IMPLEMENTATIONS[impl](x, alpha, bases, coefficients, bias, stride, padding, dilation, kernel_size)

    assert torch.autograd.gradcheck(fn, (x, alpha, coefficients, bias))


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [None, 0, 2])
@pytest.mark.parametrize("dilation", [1, 2])
def test_output_shape_equals_conv2d(kernel_size, stride, padding, dilation):
    bases = "fourier_bessel" if kernel_size % 2 and kernel_size >= 3 else None
    layer = ACDAConv2d(2, 3, kernel_size, stride=stride, padding=padding, dilation=dilation, bases=bases)
    layer.eval()  # a 1x1 output is legal; BatchNorm in training mode would refuse it
    conv = nn.Conv2d(2, 3, kernel_size, stride=stride, padding=layer.padding, dilation=dilation)
    for height, width in [(9, 9), (10, 11), (16, 13)]:
        x = torch.randn(1, 2, height, width)
        if min(height, width) + 2 * layer.padding < dilation * (kernel_size - 1) + 1:
            continue
        assert layer(x).shape == conv(x).shape, (height, width)


def test_default_padding_is_same_at_stride_one():
    layer = ACDAConv2d(2, 2, 7, dilation=2)
    assert layer.padding == 6
    assert layer(torch.randn(1, 2, 15, 12)).shape == (1, 2, 15, 12)


def test_atoms_vary_per_pixel_once_trained_but_start_static():
    layer = ACDAConv2d(3, 4, 5).eval()
    x = torch.randn(1, 3, 8, 8)
    atoms = layer.dynamic_atoms(x)
    assert torch.allclose(atoms, atoms[..., :1, :1].expand_as(atoms))  # zero-initialised generator output
    atoms = randomised(layer).dynamic_atoms(x)
    assert (atoms - atoms[..., :1, :1]).abs().amax() > 1e-2


def test_introspection_shapes():
    layer = ACDAConv2d(4, 5, 7, num_atoms=6)
    x = torch.randn(2, 4, 10, 12)
    assert layer.bases.shape == (18, 7, 7) and not layer.bases.requires_grad
    assert layer.basis_coefficients(x).shape == (2, 6, 18, 10, 12)
    assert layer.dynamic_atoms(x).shape == (2, 6, 7, 7, 10, 12)
    assert layer.coefficients.shape == (5, 4, 6)
    assert "bases" in layer.state_dict()
    direct = ACDAConv2d(4, 5, 3, bases=None)
    assert direct.bases is None
    assert direct.basis_coefficients(x).shape == (2, 6, 9, 10, 12)
    assert ACDAConv2d(4, 5, 5).scales == (3, 5) and ACDAConv2d(4, 5, 3).scales == (3,)


@pytest.mark.parametrize("generator", ["paper", "release"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shift", [(3, 5), (4, 0)])
def test_translation_equivariance(generator, impl, shift):
    layer = randomised(ACDAConv2d(3, 4, 7, impl=impl, generator=generator)).eval()
    dy, dx = shift
    x = torch.randn(1, 3, 32, 32)
    shifted = F.pad(x, (dx, 0, dy, 0))[..., :32, :32]  # content moves down-right
    with torch.no_grad():
        y, y_shifted = layer(x), layer(shifted)
    margin = 3 + 2  # the kernel's half-width plus the generator's reach
    interior = y[..., margin : 32 - dy - margin, margin : 32 - dx - margin]
    moved = y_shifted[..., dy + margin : 32 - margin, dx + margin : 32 - margin]
    assert interior.numel() > 0
    torch.testing.assert_close(moved, interior, rtol=0, atol=1e-5)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (2, 0, 1), (3, 3, 1), (2, 3, 2)])
def test_the_paper_generator_reads_x_at_each_output_windows_centre(stride, padding, dilation):
    """With only the centre tap of its 3x3, the generator's alpha at output (i, j) is a function of x at that
    window's centre (i*stride - padding + dilation*(k-1)/2, ...): zero where the centre lies in the padding."""
    layer = randomised(ACDAConv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)).eval()
    expand, norm, relu, predict = layer.atom_generator
    nn.init.normal_(norm.running_mean)
    with torch.no_grad():
        predict.weight[..., [0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]] = 0
    x = torch.randn(2, 3, 13, 11)
    out_h, out_w = layer.output_size(13, 11)
    first = dilation - padding  # the centre of output 0's window, (k-1)/2 = 1
    margin = padding + 1
    padded = F.pad(x, (margin,) * 4)
    rows = torch.arange(out_h) * stride + first + margin
    columns = torch.arange(out_w) * stride + first + margin
    centres = padded[:, :, rows][..., columns]
    with torch.no_grad():
        hidden = relu(norm(F.conv2d(centres, expand.weight, expand.bias)))
        expected = F.conv2d(hidden, predict.weight[..., 1:2, 1:2], predict.bias)
        alpha = layer.basis_coefficients(x)
    torch.testing.assert_close(alpha, expected.view_as(alpha))


def test_a_layer_whose_generator_strides_its_own_1x1_computes_the_same():
    """A strided paper layer pickled whole before the generator's 1x1 ran at stride 1 (its 1x1 has the stride)."""
    layer = randomised(ACDAConv2d(4, 4, 5, stride=2)).eval()
    x = torch.randn(2, 4, 15, 14)
    with torch.no_grad():
        expected = layer(x)
        layer.atom_generator[0].stride = (2, 2)
        torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_autocast_on_cpu(impl):
    layer = randomised(ACDAConv2d(8, 8, 5, impl=impl)).eval()
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    with torch.no_grad():
        expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = layer(x)
    assert output.dtype == torch.bfloat16
    error = (output.float() - expected).abs().max() / expected.abs().max()
    assert error < 5e-2
    output.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("impl", IMPLS)
def test_channels_last(impl):
    layer = randomised(ACDAConv2d(4, 6, 3, impl=impl)).eval()
    x = torch.randn(2, 4, 9, 10)
    expected = layer(x)
    layer = layer.to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    output = layer(x_cl)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    output.sum().backward()
    assert x_cl.grad.shape == x.shape


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
def test_torch_compile_matches_eager(impl):
    layer = randomised(ACDAConv2d(4, 6, 5, impl=impl)).eval()
    x = torch.randn(2, 4, 11, 9)
    compiled = torch.compile(layer)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-5)


def test_cpu_offers_every_impl_but_triton():
    """The public impl names (README "The layer"): on CPU all but the CUDA-only Triton kernel, and the
    equivalence matrix above runs each of them (an empty or shrunken list would let it pass vacuously)."""
    assert sorted(IMPLS) == ["basis", "fused", "unfold"]
    for impl in ("auto", "unfold", "basis", "fused", "triton"):
        assert ACDAConv2d(3, 4, 3, impl=impl).impl == impl


@pytest.mark.parametrize(
    "shape, kernel_size, picked",
    [((1, 3, 8, 8), 3, "basis"), ((1, 64, 64, 64), 3, "fused" if fused.available() else "basis")],
)
def test_auto_runs_the_impl_it_picks(monkeypatch, shape, kernel_size, picked):
    """impl="auto" in the layer's forward calls exactly the implementation the policy names: "basis" for a
    tiny layer, the fused CPU kernel (where it builds) for one past FUSED_MIN_WORK."""
    called = []
    for name, implementation in list(IMPLEMENTATIONS.items()):
        def spy(*args, name=name, implementation=implementation, **kwargs):
            called.append(name)
            return implementation(*args, **kwargs)

        monkeypatch.setitem(IMPLEMENTATIONS, name, spy)
    layer = ACDAConv2d(shape[1], 2, kernel_size).eval()
    with torch.no_grad():
        output = layer(torch.randn(shape))
    assert called == [picked] and resolve_impl("auto", torch.zeros(shape), kernel_size) == picked
    assert output.shape == (1, 2, *shape[-2:])


@pytest.mark.parametrize(
    "make, x, message",
    [
        (lambda: ACDAConv2d(3, 4, 3), torch.randn(1, 5, 8, 8), r"\(batch, 3, height, width\).*\(1, 5, 8, 8\)"),
        (lambda: ACDAConv2d(3, 4, 3), torch.randn(3, 8, 8), r"\(batch, 3, height, width\).*\(3, 8, 8\)"),
        (lambda: ACDAConv2d(3, 4, 7, padding=0), torch.randn(1, 3, 5, 5), "too small"),
    ],
)
def test_bad_input_raises_value_error(make, x, message):
    with pytest.raises(ValueError, match=message):
        make()(x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel_size=4), "odd kernel_size"),
        (dict(kernel_size=3, impl="fast"), "impl must be"),
        (dict(kernel_size=3, generator="big"), "generator must be"),
        (dict(kernel_size=3, bases="gabor"), "bases must be"),
        (dict(kernel_size=(3, 5)), "pair of equal ints"),
        (dict(kernel_size=3, num_atoms=0), "num_atoms"),
        (dict(kernel_size=3, padding=-1), "padding"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ACDAConv2d(3, 4, **kwargs)
