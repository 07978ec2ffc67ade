"""The Triton kernel (impl="triton") against the naive per-pixel reference: forward, gradients, dtypes, op checks.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, which
tests/conftest.py sets before triton is first imported, and only where there is no CUDA device).
The interpreter executes every tile op through numpy, so the shapes here are tiny (B=2, 7x6
images): the default run costs about half a minute on two cores. The same comparisons run compiled
on CUDA in TestOnGPU (`make test-gpu`), in fp32, fp16 and bf16.

Tolerances: fp32 as tests/test_fused_kernel.py (1e-4 forward, 1e-3 gradients), fp64 1e-10 and 1e-9.
bf16/fp16 inputs: the op alone (the generator's own rounding is not the kernel's) against the
reference in fp32 on the same rounded operands, relative to the largest value: 2e-2 (bf16, 8
mantissa bits) and 5e-3 (fp16) for the output, 5e-2 and 1e-2 for the gradients of x, alpha, A, bias.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

from acda_lightning.bench.gpu_check import reference_op
from acda_lightning.nn import ACDAConv2d, acda_reference
from acda_lightning.nn.kernels import device_impls, resolve_impl, triton_acda

from helpers import output_and_grads, randomised, reference_and_grads
from test_grouped import CHANNELS, GEOMETRY

CUDA = torch.cuda.is_available()


def make_layer(channels, out_channels, kernel_size, stride=1, dilation=1, bias=True, bases="fourier_bessel",
               num_atoms=3, device="cpu", dtype=torch.float32, groups=1):
    layer = ACDAConv2d(channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias, bases=bases,
                       num_atoms=num_atoms, impl="triton", groups=groups)
    return randomised(layer).to(device, dtype)


def check_equals_reference(layer, x, rtol, atol):
    """Forward and every gradient (x, the generator's parameters through alpha, A, bias) against the reference."""
    cotangent = torch.randn(x.shape[0], layer.out_channels, *layer.output_size(*x.shape[-2:]), device=x.device,
                            dtype=x.dtype)
    expected, expected_grads = reference_and_grads(layer, x, cotangent)
    output, grads = output_and_grads(layer, x, cotangent)
    torch.testing.assert_close(output, expected, rtol=rtol, atol=atol)
    names = ["x", *(name for name, _ in layer.named_parameters())]
    for name, got, want in zip(names, grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=10 * rtol, atol=10 * atol, msg=lambda m, name=name: f"{name}: {m}")


def relative_error(got, want):
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def operands(kernel_size, stride, dilation, use_bases, device="cpu", channels=10, out_channels=6, num_atoms=3):
    """x, alpha, bases, A, bias and the geometry of one call of the op, random, on a 7x6 image."""
    bases = ACDAConv2d(1, 1, kernel_size).bases.to(device) if use_bases else None
    num_bases = kernel_size**2 if bases is None else bases.shape[0]
    padding = dilation * (kernel_size - 1) // 2
    out_h, out_w = ((n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1 for n in (7, 6))
    x = torch.randn(2, channels, 7, 6, device=device)
    alpha = torch.randn(2, num_atoms, num_bases, out_h, out_w, device=device)
    coefficients = torch.randn(out_channels, channels, num_atoms, device=device) / (channels * num_atoms) ** 0.5
    bias = torch.randn(out_channels, device=device)
    return (x, alpha, bases, coefficients, bias), (stride, padding, dilation, kernel_size)


def check_low_precision(dtype, output_tolerance, grad_tolerance, kernel_size=3, stride=1, dilation=1,
                        use_bases=True, device="cpu"):
    """The op on ``dtype`` inputs against the reference in fp32 on the same (rounded) values: output
    and the gradients of x, alpha, A and bias, each relative to its largest value."""
    tensors, geometry = operands(kernel_size, stride, dilation, use_bases, device)
    x, alpha, bases, coefficients, bias = (None if t is None else t.to(dtype) for t in tensors)
    low = [t.detach().requires_grad_() for t in (x, alpha, coefficients, bias)]
    high = [t.detach().float().requires_grad_() for t in (x, alpha, coefficients, bias)]
    output = triton_acda.acda_triton(low[0], low[1], bases, low[2], low[3], *geometry)
    expected = reference_op(high[0], high[1], None if bases is None else bases.float(), high[2], high[3], *geometry)
    assert output.dtype == dtype
    assert relative_error(output, expected) < output_tolerance
    cotangent = torch.randn_like(expected)
    grads = torch.autograd.grad((output.float() * cotangent).sum(), low)
    expected_grads = torch.autograd.grad((expected * cotangent).sum(), high)
    for name, got, want in zip(["x", "alpha", "A", "bias"], grads, expected_grads):
        assert got.dtype == dtype
        assert relative_error(got, want) < grad_tolerance, name


# Each kernel size, stride, dilation, bias and bases setting at least once; channel counts that fill no
# block (5, 20 and 11 -> 32-channel blocks), 5 output channels (a 16-wide block), 3 atoms, 42 pixels.
MATRIX = [
    (3, 1, 1, True, "fourier_bessel", 20),
    (3, 2, 2, False, None, 5),
    (5, 1, 2, False, None, 11),
    (7, 2, 1, True, "fourier_bessel", 5),
]
# More of the same, in the slow run: the interpreter takes a few seconds per k=5/7 case.
SLOW_MATRIX = [
    (5, 2, 1, True, "fourier_bessel", 20),
    (7, 1, 1, True, "fourier_bessel", 11),
    (7, 2, 2, False, None, 11),
    (5, 1, 2, True, None, 40),
]

# test_grouped.py's channel settings (grouped, depthwise, depthwise with a channel multiplier) against its
# geometries: the default run takes each once (the diagonal, about 12 s per dtype), the slow run the rest.
GROUPED = [
    pytest.param(*channels, *geometry, marks=() if i == j else pytest.mark.slow)
    for i, channels in enumerate(CHANNELS)
    for j, geometry in enumerate(GEOMETRY)
]

@pytest.fixture
def blocks_of_16(monkeypatch):
    """Every tile 16 wide (tl.dot's least), so that tiny shapes span several blocks, each with a tail."""
    for blocks in (*triton_acda.FORWARD_CONFIGS, triton_acda.BACKWARD_BLOCKS, triton_acda.INPUT_GRAD_BLOCKS):
        for key in blocks.keys() - {"warps", "stages"}:
            monkeypatch.setitem(blocks, key, 16)


interpreted = pytest.mark.skipif(
    not triton_acda.available("cpu"),
    reason="Triton's interpreter is off (tests/conftest.py turns it on where there is no CUDA device)",
)


@interpreted
class TestInterpreted:
    @pytest.mark.parametrize("kernel_size, stride, dilation, bias, bases, channels", MATRIX)
    def test_equals_reference_fp32(self, kernel_size, stride, dilation, bias, bases, channels):
        torch.manual_seed(kernel_size * 7 + stride * 3 + dilation)
        layer = make_layer(channels, 5, kernel_size, stride, dilation, bias, bases, num_atoms=3)
        x = torch.randn(2, channels, 7, 6, requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)

    @pytest.mark.slow
    @pytest.mark.parametrize("kernel_size, stride, dilation, bias, bases, channels", SLOW_MATRIX)
    def test_equals_reference_fp32_more(self, kernel_size, stride, dilation, bias, bases, channels):
        layer = make_layer(channels, 7, kernel_size, stride, dilation, bias, bases, num_atoms=7)
        x = torch.randn(2, channels, 8, 7, requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize("kernel_size, stride, dilation", [
        (3, 1, 2),
        pytest.param(5, 1, 1, marks=pytest.mark.slow),
    ])
    def test_several_blocks_of_pixels_channels_and_outputs(self, blocks_of_16, kernel_size, stride, dilation):
        """16-wide blocks: 42 pixels in 3 tiles, 20 channels and 18 outputs in 2 blocks each, every one with a tail."""
        layer = make_layer(20, 18, kernel_size, stride, dilation, num_atoms=2)
        x = torch.randn(1, 20, 7, 6, requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)

    def test_equals_reference_fp64(self):
        """Accumulated in float64 for float64 inputs: equal to the reference to 1e-10, as every other impl."""
        layer = make_layer(6, 4, 3, stride=2, num_atoms=3, dtype=torch.float64)
        x = torch.randn(2, 6, 7, 6, dtype=torch.float64, requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
    @pytest.mark.parametrize("in_channels, out_channels, groups, kernel_size, stride, dilation, bias", GROUPED)
    def test_grouped_equals_reference(self, launches, dtype, tolerance, in_channels, out_channels, groups,
                                      kernel_size, stride, dilation, bias):
        """Output channel o reads only its group's C/g inputs, A is (O, C/g, m), the atoms are every group's;
        computed by the kernels (one output block per group), not by the layer's "basis" fallback."""
        layer = make_layer(in_channels, out_channels, kernel_size, stride, dilation, bias, groups=groups, dtype=dtype)
        x = torch.randn(2, in_channels, 7, 6, dtype=dtype, requires_grad=True)
        check_equals_reference(layer, x, rtol=tolerance, atol=tolerance)
        assert [(launch["kernel"], launch["grid"][1]) for launch in launches] == [
            ("forward", groups), ("responses", 1), ("atom_grad", 1), ("input_grad", 1)]

    def test_grouped_several_channel_and_output_blocks_per_group(self, blocks_of_16, launches):
        """16-wide blocks, 2 groups of 20 inputs and 18 outputs: 2 channel and 2 output blocks per group, each
        with a tail, so a block's offsets inside its group and the group's own offset both count."""
        layer = make_layer(40, 36, 3, num_atoms=2, groups=2)
        x = torch.randn(1, 40, 7, 6, requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)
        forward = launches[0]
        assert (forward["kernel"], forward["grid"][:2], forward["BLOCK_C"], forward["BLOCK_O"]) == (
            "forward", (3, 2 * 2), 16, 16)

    @pytest.mark.parametrize("stride, dilation, use_bases", [(1, 2, True), (2, 1, False)])
    def test_bf16_inputs_within_bf16_rounding(self, stride, dilation, use_bases):
        check_low_precision(torch.bfloat16, 2e-2, 5e-2, 3, stride, dilation, use_bases)

    def test_bf16_autocast_returns_bf16(self):
        layer = make_layer(8, 6, 3).eval()
        x = torch.randn(2, 8, 7, 6)
        with torch.no_grad():
            expected = layer(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                output = layer(x)
        assert output.dtype == torch.bfloat16
        assert relative_error(output, expected) < 5e-2

    def test_channels_last_in_channels_last_out(self):
        """Read and written through strides; .sum() also hands backward a stride-0 (expanded) gradient."""
        layer = make_layer(6, 5, 3, num_atoms=2).eval()
        x = torch.randn(2, 6, 7, 6, requires_grad=True)
        expected = layer(x)
        (expected_grad,) = torch.autograd.grad(expected.sum(), x)
        x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
        output = layer(x_cl)
        assert output.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
        (grad,) = torch.autograd.grad(output.sum(), x_cl)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("use_bases", [True, False])
    def test_opcheck(self, use_bases):
        """torch.library.opcheck: schema, fake (meta) impl, autograd registration, AOT dispatch."""
        bases = ACDAConv2d(1, 1, 3).bases if use_bases else None
        num_bases = 9 if bases is None else bases.shape[0]
        x = torch.randn(1, 3, 5, 6, requires_grad=True)
        alpha = torch.randn(1, 2, num_bases, 3, 3, requires_grad=True)
        coefficients = torch.randn(4, 3, 2, requires_grad=True)
        bias = torch.randn(4, requires_grad=True)
        torch.library.opcheck(triton_acda.triton_acda, (x, alpha, bases, coefficients, bias, 3, 2, 1, 1))

    def test_opcheck_grouped(self):
        """Depthwise with a channel multiplier of 2 (groups = C = 4, O = 8): A is (8, 1, m)."""
        bases = ACDAConv2d(1, 1, 3).bases
        x = torch.randn(1, 4, 5, 6, requires_grad=True)
        alpha = torch.randn(1, 2, bases.shape[0], 3, 3, requires_grad=True)
        coefficients = torch.randn(8, 1, 2, requires_grad=True)
        bias = torch.randn(8, requires_grad=True)
        torch.library.opcheck(triton_acda.triton_acda, (x, alpha, bases, coefficients, bias, 3, 2, 1, 1, 4))

    @pytest.mark.slow
    def test_torch_compile_matches_eager(self):
        """The custom op is opaque to torch.compile; the generator around it is compiled (about a minute)."""
        layer = make_layer(4, 6, 3, num_atoms=2)
        x = torch.randn(2, 4, 7, 6, requires_grad=True)
        expected, expected_grads = output_and_grads(layer, x, torch.ones(2, 6, 7, 6))
        output, grads = output_and_grads(torch.compile(layer), x, torch.ones(2, 6, 7, 6))
        torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    def test_torch_export_sees_one_op(self):
        layer = make_layer(4, 4, 3, num_atoms=2).eval()
        x = torch.randn(1, 4, 7, 6)
        program = torch.export.export(layer, (x,))
        targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
        assert targets.count("acda_lightning.triton_acda.default") == 1, targets
        torch.testing.assert_close(program.module()(x), layer(x))


class LaunchRecorder:
    """Stands in for a Triton kernel: records each launch's grid and compile-time arguments, then launches."""

    def __init__(self, kernel, name, launches):
        self.kernel, self.name, self.launches = kernel, name, launches

    def __getitem__(self, grid):
        def launch(*args, **settings):
            self.launches.append({"kernel": self.name, "grid": grid, **settings})
            return self.kernel[grid](*args, **settings)

        return launch


@pytest.fixture
def launches(monkeypatch):
    recorded = []
    for name in ("forward", "responses", "atom_grad", "input_grad"):
        attribute = f"_acda_{name}_kernel"
        monkeypatch.setattr(triton_acda, attribute, LaunchRecorder(getattr(triton_acda, attribute), name, recorded))
    return recorded


@pytest.fixture
def allow_tf32():
    """Sets torch.backends.cuda.matmul.allow_tf32 for one test: ``allow_tf32(True)``."""
    saved = torch.backends.cuda.matmul.allow_tf32

    def set_allowed(allowed: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32 = allowed

    yield set_allowed
    torch.backends.cuda.matmul.allow_tf32 = saved


@interpreted
class TestLaunchSettings:
    """What each kernel is launched with: dot precision, offset width, batch tiling over the grid."""

    @pytest.mark.parametrize("tf32", [False, True])
    def test_fp32_dots_in_tf32_exactly_when_torch_allows(self, allow_tf32, launches, tf32):
        allow_tf32(tf32)
        layer = make_layer(6, 5, 3, num_atoms=2)
        check_equals_reference(layer, torch.randn(2, 6, 7, 6, requires_grad=True), rtol=1e-4, atol=1e-4)
        # The backward's GEMMs are torch's own, which read the same switch; its gather has no dot.
        precision = "tf32" if tf32 else "ieee"
        assert [(launch["kernel"], launch.get("PRECISION")) for launch in launches] == [
            ("forward", precision), ("responses", precision), ("atom_grad", precision), ("input_grad", None)]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_inputs_dot_in_their_own_dtype_whatever_tf32(self, allow_tf32, launches, dtype):
        """Their tensor cores, never TF32 (AMD's compiler rejects TF32 for them)."""
        allow_tf32(True)
        check_low_precision(dtype, 2e-2, 5e-2)
        operand = {torch.float16: triton.language.float16, torch.bfloat16: triton.language.bfloat16}[dtype]
        assert [(launch["kernel"], launch["OPERAND"], launch["PRECISION"]) for launch in launches
                if "OPERAND" in launch] == [(kernel, operand, "ieee") for kernel in ("forward", "responses", "atom_grad")]

    def test_64_bit_offsets_past_2_31_elements_per_image(self, monkeypatch, launches):
        """A small image takes 32-bit offsets; with the limit lowered below its size the 64-bit path runs, and
        matches the reference; an image of 1x513x2048x2048 (NCHW) or 1x512x2048x2048 (channels_last) is past it."""
        layer = make_layer(6, 5, 3, num_atoms=2)
        x = torch.randn(2, 6, 7, 6, requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)
        with monkeypatch.context() as patch:
            patch.setattr(triton_acda, "INT32_OFFSETS", 6 * 9 * 8 // 2)
            check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)
        int32, int64 = triton.language.int32, triton.language.int64
        assert [launch["INDEX"] for launch in launches] == [int32] * 4 + [int64] * 4
        forward, gather = triton_acda.FORWARD_CONFIGS[0], triton_acda.INPUT_GRAD_BLOCKS
        for x in (torch.empty(1, 513, 2048, 2048, device="meta"),
                  torch.empty(1, 512, 2048, 2048, device="meta").to(memory_format=torch.channels_last)):
            padded = [triton_acda.F.pad(x, (1,) * 4)]
            settings = triton_acda._settings(x, torch.empty(512, x.shape[1], 2), 3, forward, padded)
            assert (settings["INDEX"], settings["BLOCK_O"]) == (int64, forward["outputs_64bit"])
            # 64-bit addresses take registers: the gather's channel block is capped lower (ptxas spilled at 256)
            wide_gather = triton_acda._tile_settings(x, 3, gather, padded, channels=x.shape[1])
            assert (wide_gather["INDEX"], wide_gather["BLOCK_C"]) == (int64, gather["channels_64bit"])
        settings = triton_acda._settings(x, torch.empty(512, 512, 2), 3, forward, [x[:, :, :1024]])
        assert (settings["INDEX"], settings["BLOCK_O"]) == (int32, forward["outputs"])
        narrow_gather = triton_acda._tile_settings(x, 3, gather, [x[:, :, :1024]], channels=512)
        assert (narrow_gather["INDEX"], narrow_gather["BLOCK_C"]) == (int32, gather["channels"])

    def test_batch_tiled_over_the_grid(self, monkeypatch, launches):
        """Grid dimension z holds 65535 programs: a larger batch is launched in slices (here of 2 images)."""
        monkeypatch.setattr(triton_acda, "MAX_GRID_BATCH", 2)
        layer = make_layer(6, 5, 3, num_atoms=2)
        check_equals_reference(layer, torch.randn(5, 6, 7, 6, requires_grad=True), rtol=1e-4, atol=1e-4)
        backward = [(kernel, images) for images in (2, 2, 1) for kernel in ("responses", "atom_grad", "input_grad")]
        assert [(launch["kernel"], launch["grid"][2]) for launch in launches] == [
            ("forward", 2), ("forward", 2), ("forward", 1), *backward]

    def test_gradients_not_needed_are_not_computed(self, launches):
        """An input that needs no gradient (a network's first layer) skips the grad_x kernel; a frozen
        generator as well skips grad_D; the gradients that are needed still equal the reference's."""
        layer = make_layer(6, 5, 3, num_atoms=2)
        x = torch.randn(2, 6, 7, 6)
        cotangent = torch.randn(2, 5, 7, 6)
        parameters = [layer.coefficients, layer.bias, *layer.atom_generator.parameters()]
        output = layer(x)
        grads = torch.autograd.grad((output * cotangent).sum(), parameters)
        reference = acda_reference(x, layer.dynamic_atoms(x), layer.coefficients, layer.bias, 1, 1, 1)
        expected = torch.autograd.grad((reference * cotangent).sum(), parameters)
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
        assert [launch["kernel"] for launch in launches] == ["forward", "responses", "atom_grad"]
        layer.atom_generator.requires_grad_(False)
        (grad_a,) = torch.autograd.grad((layer(x) * cotangent).sum(), [layer.coefficients])
        torch.testing.assert_close(grad_a, expected[0], rtol=1e-3, atol=1e-3)
        assert [launch["kernel"] for launch in launches[3:]] == ["forward", "responses"]


def test_forward_autotune_times_the_configs_fitted_to_each_call():
    """On a GPU the forward is autotuned over FORWARD_CONFIGS, each fitted to the call's channels and outputs
    per group and its offset width; configs that fit to the same tiles are timed once, and where one is left
    autotune launches it untimed. The interpreter (and every launch test above) runs the first directly."""
    def fitted(channels, outputs, index):
        configs = triton_acda._forward_configs(None, {"group_channels": channels, "group_outputs": outputs},
                                               INDEX=index)
        return [(config.kwargs["BLOCK_P"], config.kwargs["BLOCK_C"], config.kwargs["BLOCK_O"], config.num_warps,
                 config.num_stages) for config in configs]

    int32, int64 = triton.language.int32, triton.language.int64
    widest = [(blocks["pixels"], blocks["channels"], blocks["outputs"], blocks["warps"], blocks["stages"])
              for blocks in triton_acda.FORWARD_CONFIGS]
    assert len(widest) > 1 and fitted(4096, 4096, int32) == widest
    assert fitted(5, 40, int32) == [(16, 16, 64, 8, 1)]  # 128- and 64-wide output blocks both fit 40 outputs to 64
    assert fitted(4096, 4096, int64) == [(16, 16, 64, 8, 1)]  # 64-bit offsets cap the output block at 64
    autotuned = triton_acda._acda_forward_autotuned
    assert autotuned.fn is triton_acda._acda_forward_kernel
    assert {"group_channels", "group_outputs", "pixels", "INDEX"} <= set(autotuned.keys)


def test_cpu_without_the_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(triton_acda, "_interpreted", lambda: False)
    assert not triton_acda.available("cpu")
    layer = ACDAConv2d(3, 4, 3, impl="triton")
    with pytest.raises(RuntimeError, match="runs on CUDA tensors"):
        layer(torch.randn(1, 3, 6, 6))


@pytest.mark.slow
def test_kernels_compile_for_cuda_targets_without_spills():
    """Without a GPU: Triton lowers all four kernels (the forward in every config autotune may pick) for sm_80
    and sm_90 in every dtype (in a fresh process, where the interpreter is off), and ptxas keeps them in
    registers."""
    script = Path(__file__).with_name("triton_compile_check.py")
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(script.parent.parent)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("sm_")]
    assert len(rows) == 2 * 5 * 2, result.stdout
    for row in rows:
        stacks = [int(field.split("=")[1]) for field in row.split() if field.startswith("stack=")]
        shared = [int(field.split("=")[1]) for field in row.split() if field.startswith("shared=")]
        # fp64 (a reference dtype, not a speed path): its gather spills 24 bytes at 8 warps on sm_80.
        assert len(stacks) == 3 + len(triton_acda.FORWARD_CONFIGS), row
        assert max(stacks) <= (32 if " fp64 " in row else 16), row
        assert max(shared) <= 163 * 1024, row  # an A100's largest shared memory per block


def test_cuda_offers_triton_and_not_the_cpu_kernel():
    """On CUDA the fused Triton kernel replaces the C++ CPU kernel (which has no CUDA path); what the GPU
    tests and `acda bench --device cuda` iterate over."""
    assert sorted(device_impls("cuda")) == ["basis", "triton", "unfold"]
    assert sorted(device_impls("mps")) == ["basis", "unfold"]


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and triton_acda.available("cuda")), reason="needs a CUDA device, Triton compiling")
class TestOnGPU:
    """The same comparisons, compiled on CUDA (fp32 matmuls at torch's default "highest": exact fp32 dots)."""

    @pytest.mark.parametrize("kernel_size, stride, dilation, bias, bases, channels", MATRIX + SLOW_MATRIX)
    def test_equals_reference_fp32(self, kernel_size, stride, dilation, bias, bases, channels):
        layer = make_layer(channels, 5, kernel_size, stride, dilation, bias, bases, num_atoms=7, device="cuda")
        x = torch.randn(2, channels, 7, 6, device="cuda", requires_grad=True)
        check_equals_reference(layer, x, rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize("kernel_size, stride, dilation", [(3, 1, 1), (7, 2, 1), (5, 1, 2)])
    def test_equals_basis_at_realistic_sizes(self, monkeypatch, kernel_size, stride, dilation):
        """Many pixel tiles and channel/output blocks: against impl="basis" (cuDNN, TF32 off) on a 33x30 image."""
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        layer = make_layer(70, 90, kernel_size, stride, dilation, num_atoms=6, device="cuda")
        x = torch.randn(3, 70, 33, 30, device="cuda", requires_grad=True)
        cotangent = torch.randn(3, 90, *layer.output_size(33, 30), device="cuda")
        output, grads = output_and_grads(layer, x, cotangent)
        layer.impl = "basis"
        expected, expected_grads = output_and_grads(layer, x, cotangent)
        assert relative_error(output, expected) < 1e-4
        for got, want in zip(grads, expected_grads):
            assert relative_error(got, want) < 1e-3

    @pytest.mark.parametrize("dtype, output_tolerance, grad_tolerance",
                             [(torch.float16, 5e-3, 1e-2), (torch.bfloat16, 2e-2, 5e-2)])
    @pytest.mark.parametrize("kernel_size, stride, dilation, use_bases", [(5, 1, 1, True), (3, 2, 2, False)])
    def test_half_precision_inputs(self, dtype, output_tolerance, grad_tolerance, kernel_size, stride, dilation,
                                   use_bases):
        check_low_precision(dtype, output_tolerance, grad_tolerance, kernel_size, stride, dilation, use_bases, "cuda")

    def test_autocast_and_channels_last(self):
        layer = make_layer(16, 8, 3, device="cuda").eval()
        x = torch.randn(2, 16, 12, 12, device="cuda")
        with torch.no_grad():
            expected = layer(x)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                output = layer(x.to(memory_format=torch.channels_last))
        assert output.dtype == torch.bfloat16 and output.is_contiguous(memory_format=torch.channels_last)
        assert relative_error(output, expected) < 5e-2

    def test_opcheck_and_auto(self):
        bases = ACDAConv2d(1, 1, 5).bases.cuda()
        x = torch.randn(2, 3, 9, 8, device="cuda", requires_grad=True)
        alpha = torch.randn(2, 2, bases.shape[0], 5, 4, device="cuda", requires_grad=True)
        coefficients = torch.randn(4, 3, 2, device="cuda", requires_grad=True)
        torch.library.opcheck(triton_acda.triton_acda, (x, alpha, bases, coefficients, None, 5, 2, 2, 1))
        expected = "triton" if torch.cuda.get_device_capability() >= (8, 0) else "basis"
        assert resolve_impl("auto", x, 5, stride=2, dilation=1) == expected  # after its self-check
