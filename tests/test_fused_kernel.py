"""The fused CPU kernel against the naive per-pixel reference: forward, gradients, dtypes, compile/export.

The kernel is compiled once per machine (cached under TORCH_EXTENSIONS_DIR, ~/.cache/torch_extensions
by default); the session fixture pays that once (about 40 s of CPU), later sessions only load it (~1 s).
"""

import contextlib
import os
import random
import subprocess
import sys
import warnings

import pytest
import torch

from acda_lightning.nn import ACDAConv2d
from acda_lightning.nn.kernels import FUSED_MIN_WORK, fused, resolve_impl

from helpers import assert_every_impl_matches_the_reference, randomised, reference_and_grads


@pytest.fixture(scope="module", autouse=True)
def built_kernel():
    if not fused.available():
        pytest.skip("no C++ compiler: the fused kernel cannot be built here ('auto' uses 'basis')")


@contextlib.contextmanager
def batch_band_pixels(pixels: int):
    """Batches of up to this many output pixels run as one band with multi-threaded GEMMs, larger ones in bands
    of rows per thread (the kernel's default: 1024 pixels): a test sets it to run either path on its shapes."""
    previous = fused.extension().set_batch_band_pixels(pixels)
    try:
        yield
    finally:
        fused.extension().set_batch_band_pixels(previous)


BAND_PATHS = {"bands": 0, "batch-band": 1 << 40}


# 22 channels (blocks of 4 on AVX-512 and two single ones), 7 atoms (a 6-atom block plus one)
# reach every code path of the kernel's register blocking. The full geometry matrix runs in float64
# in tests/test_acda_layer.py (every impl); here each kernel size, stride, dilation, bias and bases
# setting appears at least once in fp32.
MATRIX = [
    (3, 1, 1, True, "fourier_bessel"),
    (3, 2, 2, False, None),
    (5, 1, 2, False, "fourier_bessel"),
    (5, 2, 1, True, None),
    (7, 1, 1, True, "fourier_bessel"),
    (7, 2, 2, True, "fourier_bessel"),
]


@pytest.mark.parametrize("kernel_size, stride, dilation, bias, bases", MATRIX)
def test_fused_equals_reference_fp32(kernel_size, stride, dilation, bias, bases):
    torch.manual_seed(kernel_size * 7 + stride * 3 + dilation)
    layer = randomised(
        ACDAConv2d(22, 5, kernel_size, stride=stride, dilation=dilation, bias=bias, bases=bases, num_atoms=7,
                   impl="fused")
    )
    x = torch.randn(2, 22, 7, 6, requires_grad=True)
    cotangent = torch.randn(2, 5, *layer.output_size(7, 6))
    expected, expected_grads = reference_and_grads(layer, x, cotangent)
    output = layer(x)
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad((output * cotangent).sum(), [x, *layer.parameters()])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


# The kernel computes whole vectors of output pixels (16 floats on AVX-512, 8 on AVX2) and cuts bands of
# rows that may span several small images: rows that end mid-vector, bands across images, the batch's
# last vector (it reads a vector of alpha past its end, from a copy), stride-2 phase planes, depthwise,
# bands that backward takes a slab at a time (10 rows of 140 pixels: 6-row bands of two 3-row slabs), a band
# that starts mid-image and ends in the next one (two such images), and whole images over the band budget
# (2 threads: 6-row images, one band each, of two slabs), in float64 against the per-pixel reference (the
# read-ahead lanes once leaked NaN into dL/dx).
@pytest.mark.parametrize(
    "batch, size, kernel_size, stride, groups",
    [(2, (6, 37), 7, 1, 1), (8, (4, 4), 3, 1, 1), (5, (9, 21), 5, 2, 1), (2, (13, 19), 3, 1, 33),
     (1, (10, 140), 7, 1, 1), (2, (10, 140), 7, 1, 1), (2, (6, 140), 7, 1, 1)],
    ids=["wide-rows", "tiny-images", "strided", "depthwise", "slabs", "band-across-images", "image-over-budget"],
)
def test_row_ends_and_bands_across_images_match_the_reference(batch, size, kernel_size, stride, groups):
    torch.manual_seed(batch)
    layer = randomised(ACDAConv2d(33, 33 if groups > 1 else 17, kernel_size, stride=stride, groups=groups)).double()
    x = torch.randn(batch, 33, *size, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(batch, layer.out_channels, *layer.output_size(*size), dtype=torch.float64)
    with batch_band_pixels(BAND_PATHS["bands"]):
        assert_every_impl_matches_the_reference(layer, x, cotangent, ["fused"])


# Seeded random layers: kernel 1-7 (1 and even ones with bases=None), stride 1-3, dilation 1-3, groups, padding 0-4,
# odd sizes, channels_last inputs, at 1 and 3 threads (bands, slabs and the dL/dA shares follow the thread count),
# in bands of rows and as one batch band (split by image among the threads for the per-pixel passes).
@pytest.mark.parametrize("path", BAND_PATHS)
@pytest.mark.parametrize("threads", [1, 3])
def test_random_layers_match_the_reference_at_any_thread_count(threads, path):
    rng = random.Random(threads)
    torch.manual_seed(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with batch_band_pixels(BAND_PATHS[path]):
            checked = 0
            while checked < 24:
                k, groups = rng.choice([1, 2, 3, 4, 5, 7]), rng.choice([1, 2])
                stride, dilation = rng.randint(1, 3), rng.randint(1, 3)
                padding = rng.choice([None, rng.randint(0, 4)]) if k % 2 else rng.randint(0, 4)
                layer = randomised(ACDAConv2d(groups * rng.randint(1, 5), groups * rng.randint(1, 4), k, stride=stride,
                                              dilation=dilation, groups=groups, padding=padding,
                                              bases="fourier_bessel" if k % 2 and k > 1 else None)).double()
                batch, size = rng.randint(1, 4), (rng.randint(1, 24), rng.randint(1, 40))
                out_size = layer.output_size(*size)
                if min(out_size) < 1 or batch * out_size[0] * out_size[1] < 2:  # the generator's BatchNorm needs 2
                    continue
                x = torch.randn(batch, layer.in_channels, *size, dtype=torch.float64)
                if rng.random() < 0.3:
                    x = x.contiguous(memory_format=torch.channels_last)
                cotangent = torch.randn(batch, layer.out_channels, *out_size, dtype=torch.float64)
                assert_every_impl_matches_the_reference(layer, x.requires_grad_(), cotangent, ["fused"])
                checked += 1
    finally:
        torch.set_num_threads(previous)


# (in, out, groups): dense, grouped (a GEMM per group), depthwise and depthwise with a channel
# multiplier (the per-channel sum over atoms)
@pytest.mark.parametrize(
    "kernel_size, stride, dilation, padding, in_channels, out_channels, groups",
    [(3, 1, 1, 1, 3, 4, 1), (5, 2, 2, 3, 3, 4, 1), (3, 1, 1, 1, 4, 6, 2), (3, 1, 1, 1, 20, 20, 20),
     (5, 2, 2, 3, 3, 6, 3)],
    ids=["dense-3x3", "dense-5x5-strided", "grouped", "depthwise", "depthwise-multiplier"],
)
def test_custom_op_gradcheck_and_opcheck(kernel_size, stride, dilation, padding, in_channels, out_channels, groups):
    """float64 gradcheck of the op itself (the bias it writes before the GEMM included), and torch.library.opcheck
    (fake impl, autograd registration) with and without a bias."""
    bases = ACDAConv2d(1, 1, kernel_size).bases.flatten(1).double()
    x = torch.randn(1, in_channels, 6, 7, dtype=torch.float64, requires_grad=True)
    out_h, out_w = ((n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1 for n in (6, 7))
    alpha = torch.randn(1, 2, bases.shape[0], out_h, out_w, dtype=torch.float64, requires_grad=True)
    coefficients = torch.randn(out_channels, in_channels // groups, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_channels, dtype=torch.float64, requires_grad=True)
    args = (x, alpha, bases, coefficients, kernel_size, stride, padding, dilation, groups)
    assert torch.autograd.gradcheck(lambda x, a, c, b: fused.fused_acda(x, a, bases, c, *args[4:], bias=b),
                                    (x, alpha, coefficients, bias))
    torch.library.opcheck(fused.fused_acda, args)
    torch.library.opcheck(fused.fused_acda, args, {"bias": bias})


def test_bf16_input_is_computed_in_fp32():
    layer = randomised(ACDAConv2d(16, 8, 5, impl="fused"))
    x = torch.randn(2, 16, 10, 10)
    expected = layer(x)
    output = layer.bfloat16()(x.bfloat16())
    assert output.dtype == torch.bfloat16
    # bf16 rounding of x and the weights (8 bits of mantissa), not of the accumulation
    assert ((output.float() - expected).abs().max() / expected.abs().max()) < 2e-2


def relative_error(got, want):
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def test_bf16_gemm_runs_the_contractions_in_bf16_within_bf16_tolerance():
    layer = randomised(ACDAConv2d(32, 16, 5, num_atoms=6))
    x = torch.randn(2, 32, 9, 10, requires_grad=True)
    alpha = layer.basis_coefficients(x).detach().requires_grad_()
    args = (layer.bases.flatten(1), layer.coefficients, 5, 1, 2, 1)
    results = {}
    for bf16_gemm in (False, True):
        output = fused.fused_acda(x, alpha, *args, bf16_gemm=bf16_gemm)
        results[bf16_gemm] = (output, *torch.autograd.grad(output.square().sum(), [x, alpha, layer.coefficients]))
    for exact, rounded in zip(results[False], results[True]):
        assert rounded.dtype == torch.float32 and not torch.equal(exact, rounded)  # bf16 operands, not fp32
        assert relative_error(rounded, exact) < 2e-2


@pytest.mark.parametrize("groups, has_gemm", [(4, True), (32, False)], ids=["grouped", "depthwise"])
def test_bf16_gemm_rounds_grouped_gemms_and_leaves_depthwise_in_fp32(groups, has_gemm):
    """A grouped layer's per-group GEMMs take bf16 operands; depthwise has no GEMM (a per-channel atom sum)."""
    layer = randomised(ACDAConv2d(32, 32, 5, num_atoms=6, groups=groups))
    x = torch.randn(2, 32, 9, 10, requires_grad=True)
    alpha = layer.basis_coefficients(x).detach().requires_grad_()
    args = (layer.bases.flatten(1), layer.coefficients, 5, 1, 2, 1, groups)
    results = {}
    for bf16_gemm in (False, True):
        output = fused.fused_acda(x, alpha, *args, bf16_gemm=bf16_gemm)
        results[bf16_gemm] = (output, *torch.autograd.grad(output.square().sum(), [x, alpha, layer.coefficients]))
    for exact, rounded in zip(results[False], results[True]):
        assert torch.equal(exact, rounded) != has_gemm
        assert relative_error(rounded, exact) < 2e-2


def test_autocast_bf16_returns_bf16_within_tolerance_of_fp32():
    layer = randomised(ACDAConv2d(32, 16, 3, impl="fused"))
    x = torch.randn(2, 32, 12, 12, requires_grad=True)
    expected = layer(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = layer(x)
    assert output.dtype == torch.bfloat16 and output.isfinite().all()
    (grad,) = torch.autograd.grad(output.float().sum(), x)
    assert relative_error(output, expected) < 3e-2
    # The generator's bf16 convs and BatchNorm dominate the gradient's error (impl="basis" has the same 3%).
    assert ((grad - expected_grad).norm() / expected_grad.norm()) < 5e-2


def test_channels_last_and_batch_of_one():
    layer = randomised(ACDAConv2d(18, 6, 3, impl="fused")).eval()
    x = torch.randn(1, 18, 7, 11)
    expected = layer.__class__.forward(layer, x)
    layer.impl = "basis"
    torch.testing.assert_close(expected, layer(x), rtol=1e-5, atol=1e-5)
    layer.impl = "fused"
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("traced, message", [(False, "differentiate twice"), (True, "no autograd formula")],
                         ids=["eager", "custom-op"])
def test_a_second_derivative_raises_instead_of_returning_a_wrong_one(monkeypatch, traced, message):
    """The kernel has no double backward. Eager steps use a plain autograd.Function, whose backward would
    otherwise hand create_graph a result cut from the graph (silently no second derivative); the custom op
    (torch.compile/export) refuses too."""
    monkeypatch.setattr(fused, "_traced", lambda x: traced)
    torch.manual_seed(0)
    layer = ACDAConv2d(4, 4, 3, impl="fused").double()
    x = torch.randn(1, 4, 6, 6, dtype=torch.double, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=message):
        grad.sum().backward()


def test_the_kernel_refuses_tensors_off_the_cpu():
    """Eager steps call the C++ op directly (not through the CPU-only custom op): it checks the device itself
    rather than reading a GPU's memory as host memory. (Meta tensors stand in for CUDA ones here.)"""
    x, alpha = torch.empty(1, 4, 6, 6, device="meta"), torch.empty(1, 6, 6, 6, 6, device="meta")
    bases, coefficients = torch.empty(6, 9, device="meta"), torch.empty(4, 4, 6, device="meta")
    with pytest.raises(RuntimeError, match="fused ACDA is the CPU kernel, got x on meta"):
        fused.extension().forward(x, alpha, bases, coefficients, 3, 1, 1, 1, 1, False)


def test_torch_export_sees_one_fused_op():
    layer = randomised(ACDAConv2d(8, 8, 5, impl="fused")).eval()
    x = torch.randn(1, 8, 12, 12)
    program = torch.export.export(layer, (x,))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count("acda_lightning.fused_acda.default") == 1, targets
    torch.testing.assert_close(program.module()(x), layer(x))


@pytest.mark.slow
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_torch_compile_matches_eager_forward_and_backward(memory_format):
    """About 15 s per memory format on 2 cores. A fresh Inductor cache: a cached graph keeps the
    op's fake strides from when it was compiled, which would hide a wrong fake implementation."""
    from torch._inductor.utils import fresh_cache

    layer = randomised(ACDAConv2d(8, 8, 5, impl="fused"))
    x = torch.randn(2, 8, 11, 9).to(memory_format=memory_format).requires_grad_()
    expected = layer(x)
    expected_grads = torch.autograd.grad(expected.sum(), [x, *layer.parameters()])
    with fresh_cache():
        output = torch.compile(layer, fullgraph=True)(x)
        grads = torch.autograd.grad(output.sum(), [x, *layer.parameters()])
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_auto_picks_fused_for_network_layers_and_basis_for_tiny_ones():
    resnet18_layer1 = torch.zeros(8, 64, 28, 28)  # resnet18's first 3x3 layers at 112 px, batch 8
    assert resolve_impl("auto", resnet18_layer1, 3) == "fused"
    assert resolve_impl("auto", torch.zeros(1, 3, 8, 8), 3) == "basis"
    assert 3 * 8 * 8 * 9 < FUSED_MIN_WORK
    lenet_first = torch.zeros(128, 3, 32, 32)  # few channels: the kernel vectorises over pixels, not channels
    assert resolve_impl("auto", lenet_first, 5, 28 * 28) == "fused"
    assert resolve_impl("basis", resnet18_layer1, 3) == "basis"


def test_auto_falls_back_to_basis_without_a_compiler(monkeypatch):
    monkeypatch.setattr(fused, "available", lambda: False)
    assert resolve_impl("auto", torch.zeros(1, 64, 64, 64), 7) == "basis"


@pytest.fixture
def fresh_extension():
    """fused.extension() decides again in this test (and once more, as before, after it)."""
    fused.extension.cache_clear()
    yield
    fused.extension.cache_clear()


def only_warning(record) -> str:
    assert len(record) == 1, [str(w.message) for w in record]
    return str(record[0].message)


@pytest.mark.parametrize(
    "setting, cause",
    [
        (lambda mp, tmp: mp.setenv("CXX", "no-such-compiler"), "no C++ compiler ('no-such-compiler')"),
        (lambda mp, tmp: mp.setattr(fused, "isa", lambda: "SVE256"), "this CPU's ISA (SVE256"),
        # A cache below a plain file cannot be created (as a read-only cache, also for root).
        (lambda mp, tmp: mp.setenv("TORCH_EXTENSIONS_DIR", str(tmp / "a-file" / "cache")), "the build failed"),
    ],
    ids=["no-compiler", "unsupported-isa", "unwritable-cache"],
)
def test_unbuildable_kernel_warns_once_naming_the_cause_and_auto_uses_basis(
    setting, cause, monkeypatch, tmp_path, fresh_extension
):
    (tmp_path / "a-file").write_text("")
    setting(monkeypatch, tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_impl("auto", torch.zeros(2, 64, 32, 32), 7) == "basis"
        assert not fused.available()
    message = only_warning(record)
    assert cause in message and "'basis'" in message


def test_cached_binary_is_keyed_by_the_isa_it_was_built_for():
    assert fused._module_name("AVX2") != fused._module_name("AVX512")
    assert fused.isa().lower() in fused._module_name(fused.isa())


def test_loading_the_kernel_and_benching_print_no_native_log_lines():
    """No "No CUDA runtime is found" (cpp_extension's import) nor Kineto's "USDT ... profiler_start"."""
    command = "from acda_lightning.cli import main; main(['bench', 'layer', '--quick', '--impls', 'fused'])"
    result = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, env=os.environ, check=True)
    assert "acda_fused" in result.stdout  # the kernel loaded and ran
    assert "No CUDA runtime" not in result.stderr and "USDT" not in result.stderr, result.stderr


@pytest.mark.parametrize("groups", [1, 20])
def test_inference_mode_gives_the_no_grad_output(groups):
    """Lightning evaluates under torch.inference_mode: the kernel's worker threads must run in the caller's
    mode, or their in-place writes into inference tensors fail."""
    layer = randomised(ACDAConv2d(20, 20, 5, impl="fused", groups=groups)).eval()
    x = torch.randn(2, 20, 9, 11)
    with torch.no_grad():
        expected = layer(x)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


def test_gemms_fall_back_where_onednn_matmul_is_refused():
    """ATen refuses oneDNN's matmul on CPUs without AVX-512 BW/VL/DQ (AVX2-only ones); capping oneDNN's ISA
    reproduces that here, and the kernel must then run its GEMMs through at::mm, with the same results."""
    command = """
import torch
from acda_lightning.nn import ACDAConv2d
torch.manual_seed(0)
layer = ACDAConv2d(16, 8, 3, impl="fused")
torch.nn.init.normal_(layer.atom_generator[-1].weight, std=0.2)
x = torch.randn(2, 16, 9, 11, requires_grad=True)
fused = layer(x)
(fused_grad,) = torch.autograd.grad(fused.square().sum(), x)
layer.impl = "basis"
basis = layer(x)
(basis_grad,) = torch.autograd.grad(basis.square().sum(), x)
torch.testing.assert_close(fused, basis, rtol=1e-4, atol=1e-4)
torch.testing.assert_close(fused_grad, basis_grad, rtol=1e-3, atol=1e-3)
print("matched")
"""
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, env=environment)
    assert result.returncode == 0 and "matched" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("layout", ["expanded", "channels_last"])
def test_output_gradients_of_any_layout_are_read_in_place(layout):
    """dL/dy is read a band at a time in whatever strides it comes (a loss's sum gives an expanded one;
    channels_last networks give channels_last ones), not copied whole first."""
    layer = randomised(ACDAConv2d(16, 8, 3, impl="fused"))
    x = torch.randn(2, 16, 9, 11, requires_grad=True)
    output = layer(x)
    if layout == "expanded":
        cotangent = torch.ones(()).expand_as(output)
    else:
        cotangent = torch.randn_like(output).contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(output, [x, *layer.parameters()], cotangent)
    layer.impl = "basis"
    expected = torch.autograd.grad(layer(x), [x, *layer.parameters()], cotangent)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_an_empty_batch_gives_empty_outputs_and_gradients():
    layer = ACDAConv2d(16, 8, 3, impl="fused")
    x = torch.randn(0, 16, 9, 11, requires_grad=True)
    output = layer(x)
    output.sum().backward()
    assert output.shape == (0, 8, 9, 11) and x.grad.shape == x.shape
    assert layer.coefficients.grad is not None and not layer.coefficients.grad.any()
