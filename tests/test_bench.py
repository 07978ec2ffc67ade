"""`acda bench` through the CLI: JSON shape and keys, and the Table 6 formula rows. Never timed."""

import json
import mmap
import time

import pytest
import torch

from acda_lightning.cli import main, run

TABLE6_KEYS = {
    "kernel_size", "conv_flops", "acda_conv_flops", "acda_total_flops",
    "conv_params", "acda_conv_params", "acda_total_params",
}


def bench_json(capsys, *args):
    assert main(["bench", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


# Table 6 of the paper (millions, 256 -> 256 channels, 100x100 output, m = 6): the rows its own formulas give,
# by kernel size: conv FLOPs, ACDA conv FLOPs, conv parameters, ACDA conv parameters. At 7x7 the paper
# prints 3.12M conv parameters where c'c l^2 + c' is 3.21M (a transposed digit).
PAPER_TABLE6 = {3: (5900.8, 4073.0, 0.59, 0.39), 5: (16386.6, 4318.7, 1.64, 0.39), 7: (32115.2, 4687.4, 3.12, 0.39)}


def test_table6_reproduces_the_papers_conv_rows(capsys):
    result = bench_json(capsys, "table6")
    rows = {row["kernel_size"]: row for row in result["rows"]}
    assert sorted(rows) == [3, 5, 7] and all(set(row) == TABLE6_KEYS for row in rows.values())
    for k, (conv_flops, acda_conv_flops, conv_params, acda_conv_params) in PAPER_TABLE6.items():
        row = rows[k]
        assert round(row["conv_flops"] / 1e5) / 10 == conv_flops  # exact to the printed 0.1M
        assert round(row["acda_conv_flops"] / 1e5) / 10 == acda_conv_flops
        assert round(row["acda_conv_params"] / 1e4) / 100 == acda_conv_params
        assert round(row["conv_params"] / 1e4) / 100 == (3.21 if k == 7 else conv_params)
        column = result["paper_millions"][str(k)]  # the paper's numbers printed beside ours
        assert (column["conv_flops"], column["acda_conv_flops"], column["conv_params"]) == (conv_flops, acda_conv_flops, conv_params)
    assert rows[3]["conv_flops"] == 256 * 256 * 9 * 100 * 100 + 256 * 100 * 100
    assert rows[7]["conv_params"] == 256 * 256 * 49 + 256
    # our generator (1x1 conv 256->64 + BN, 3x3 conv 64->6*18): the paper's generator rows do not follow from its formula
    assert rows[7]["acda_total_params"] == 256 * 256 * 6 + 256 + (256 * 64 + 64) + 2 * 64 + (64 * 108 * 9 + 108)
    counted = {row["kernel_size"]: row for row in result["flop_counter"]}
    assert counted[5]["conv_flops"] == 256 * 256 * 25 * 100 * 100  # the counter has no bias term
    assert all(row["acda_total_flops"] > row["acda_conv_flops"] for row in result["rows"])


def test_layer_view_has_every_layer_and_mode(capsys, tmp_path):
    plot = tmp_path / "layer.png"
    result = bench_json(capsys, "layer", "--quick", "--impls", "basis", "fused", "--plot", str(plot))
    rows = result["layer_rows"]
    assert {row["mode"] for row in rows} == {"forward", "forward_backward", "inference"}
    assert {"conv", "acda_basis", "dfn", "condconv", "dyconv"} <= {row["layer"] for row in rows}
    assert sum(row["auto"] for row in rows) == 3  # the impl "auto" picks, once per mode
    conv = {row["mode"]: row for row in rows if row["layer"] == "conv"}
    assert all(row["parameters"] == 4 * 4 * 9 + 4 for row in conv.values())  # --quick: 4 -> 4 channels, 3x3
    for row in rows:  # one repeat: each ratio is this layer's time over the conv's in the same mode
        assert row["ratio_min"] == row["ratio_median"] == row["ratio_max"]
        assert row["ratio_median"] == pytest.approx(row["seconds"] / conv[row["mode"]]["seconds"], rel=1e-9)
        assert row["peak_bytes"] >= 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    resnet18 = result["resnet18_rows"]  # every distinct 3x3 layer shape of a converted resnet18
    assert len(resnet18) == 7 and {"conv", "acda_basis", "acda_fused"} <= set(resnet18[0]["ratios"])


# ACDAConv2d(1, 1, 7), by hand: coefficients 1*1*6, bias 1, generator 1x1 conv 1->64 (+bias), BN (64 weights,
# 64 biases), 3x3 conv 64 -> 6 atoms * 18 bases (+bias).
TOY_ACDA_PARAMETERS = 6 + 1 + (64 + 64) + 2 * 64 + (64 * 108 * 9 + 108)


def timed_bench(capsys, *args):
    """`acda bench` JSON and the wall-clock seconds the call took, to check the times it reports against."""
    start = time.perf_counter()
    result = bench_json(capsys, *args)
    return result, time.perf_counter() - start


def check_step_times(rows: list[dict], elapsed: float) -> None:
    """--quick times one step per model: all of them fit in the command's own wall-clock time."""
    assert 0 < sum(row["seconds_per_step"]["max"] for row in rows) < elapsed
    for row in rows:
        assert row["images_per_second"] == pytest.approx(row["batch"] / row["seconds_per_step"]["median"])


def test_train_view_runs_registered_models_by_name(capsys):
    result, elapsed = timed_bench(capsys, "train", "--quick", "--models", "toy_detector:conv=conv", "toy_detector:conv=acda")
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"toy_detector:conv=conv", "toy_detector:conv=acda"}
    assert rows["toy_detector:conv=conv"]["parameters"] == 7 * 7 + 1
    assert rows["toy_detector:conv=acda"]["parameters"] == TOY_ACDA_PARAMETERS
    check_step_times(list(rows.values()), elapsed)
    assert all(row["page_faults_per_step"] >= 0 for row in rows.values())
    # the ACDA step against its conv twin's, repeat by repeat (--quick: one repeat)
    conv_row, acda_row = rows["toy_detector:conv=conv"], rows["toy_detector:conv=acda"]
    assert "ratio_to_conv" not in conv_row
    assert acda_row["ratio_to_conv"]["median"] == acda_row["step_seconds"][0] / conv_row["step_seconds"][0]


def test_train_view_prints_each_steps_page_faults(capsys):
    assert main(["bench", "train", "--quick", "--models", "toy_detector:conv=conv", "toy_detector:conv=acda"]) == 0
    header, _, *rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert header.split("|")[-2].strip() == "page faults/step"
    assert len(rows) == 2 and all(row.split("|")[-2].strip().replace(",", "").isdigit() for row in rows)
    ratio_column = [cell.strip() for cell in header.split("|")].index("step / conv twin's")
    conv_ratio, acda_ratio = (row.split("|")[ratio_column].strip() for row in rows)
    assert conv_ratio == "-" and float(acda_ratio.split()[0]) > 0


def test_train_view_times_each_acda_net_again_with_its_generators_fixed(capsys):
    result = bench_json(capsys, "train", "--quick", "--fixed-generator",
                        "--models", "toy_detector:conv=conv", "toy_detector:conv=acda")
    rows = {row["label"]: row for row in result["rows"]}
    assert list(rows) == ["toy_detector:conv=conv", "toy_detector:conv=acda",
                          "toy_detector:conv=acda (generator fixed)"]  # a conv net has no generator to fix
    conv_row, fixed_row = rows["toy_detector:conv=conv"], rows["toy_detector:conv=acda (generator fixed)"]
    assert [row["generator_fixed"] for row in rows.values()] == [False, False, True]
    assert fixed_row["model"] == "toy_detector:conv=acda" and fixed_row["parameters"] == TOY_ACDA_PARAMETERS
    assert fixed_row["ratio_to_conv"]["median"] == fixed_row["step_seconds"][0] / conv_row["step_seconds"][0]


def test_a_fixed_generator_runs_once_and_leaves_the_kernels_gradients_whole():
    from acda_lightning.bench.train import build, with_fixed_generators
    from acda_lightning.nn import ACDAConv2d

    model = build("lenet", conv="acda").eval()
    fixed = with_fixed_generators(model)
    layers = [m for m in fixed.modules() if isinstance(m, ACDAConv2d)]
    generator_calls, layer_inputs = [], {}
    for layer in layers:
        layer.atom_generator.register_forward_hook(lambda *_: generator_calls.append(1))
        layer.register_forward_pre_hook(lambda m, args: layer_inputs.__setitem__(m, args[0]))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fixed(x), model(x))  # the first call predicts alpha as the model does
    assert len(generator_calls) == len(layers) == 2
    fixed.train()(x).square().mean().backward()
    assert len(generator_calls) == 2  # later steps reuse it
    for layer in layers:
        assert layer.coefficients.grad.abs().sum() > 0  # A's gradient flows through the kernel's backward
        assert all(p.grad is None for p in layer.atom_generator.parameters())
        alpha = layer.basis_coefficients(layer_inputs[layer])
        assert alpha.requires_grad and alpha.grad is None  # the kernel computes dL/dalpha, which is then dropped
    assert all("basis_coefficients" not in vars(m) for m in model.modules())  # the model itself is untouched


# resnet18's sixteen 3x3 convs by input channels: layer1 4 x 64; layer2 64 + 3 x 128; layer3 128 + 3 x 256;
# layer4 256 + 3 x 512
RESNET18_3X3_INPUT_CHANNELS = [64] * 5 + [128] * 4 + [256] * 4 + [512] * 3


def test_train_view_passes_resnet18_options_to_its_acda_layers(capsys):
    result = bench_json(capsys, "train", "--quick", "--models", "resnet18:conv=acda", "resnet18:conv=acda,gen_hidden=16")
    default, narrow = (row["parameters"] for row in result["rows"])

    def generator_parameters(hidden: int) -> int:  # 1x1 C -> hidden, BatchNorm, 3x3 hidden -> 6 atoms x 6 bases
        return sum(c * hidden + hidden + 2 * hidden + hidden * 36 * 9 + 36 for c in RESNET18_3X3_INPUT_CHANNELS)

    assert default - narrow == generator_parameters(64) - generator_parameters(16)


@pytest.mark.parametrize("spec, named", [
    ("lenet:conv", "options are key=value"),
    ("lenet:foo=1", "'foo'"),
    ("resnet18:conv=dfn", "conv=conv or conv=acda"),
    ("resnet18:conv=conv,gen_hidden=16", "['gen_hidden']"),
    ("nosuch", "available: resnet18 (torchvision's), ad_resnet_l"),
])
def test_a_bad_model_spec_is_one_error_line(monkeypatch, capsys, spec, named):
    monkeypatch.setattr("sys.argv", ["acda", "bench", "train", "--quick", "--models", spec])
    assert run() == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("acda: error: ") and named in line


@pytest.mark.parametrize("args, named", [
    (["layer", "--sizes", "0"], "argument --sizes: must be an integer >= 1, got 0"),
    (["layer", "--batch", "0"], "argument --batch: must be an integer >= 1, got 0"),
    (["train", "--repeats", "0"], "argument --repeats: must be an integer >= 1, got 0"),
    (["train", "--warmup", "-1"], "argument --warmup: must be an integer >= 0, got -1"),
    (["layer", "--kernel-sizes", "x"], "argument --kernel-sizes: invalid int value: 'x'"),
])
def test_a_bad_number_is_refused_before_anything_runs(monkeypatch, capsys, args, named):
    monkeypatch.setattr("sys.argv", ["acda", "bench", *args])
    with pytest.raises(SystemExit) as stopped:
        run()
    assert stopped.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == f"acda bench: error: {named}"


@pytest.mark.parametrize("args, named", [
    (["roofline", "--kernel-sizes", "4"], "--kernel-sizes 4: the benchmarks time the default layer"),
    (["layer", "--quick", "--kernel-sizes", "1"], "--kernel-sizes 1: the benchmarks time the default layer"),
    (["layer", "--quick", "--fixed-generator"], "--fixed-generator times training steps: it belongs to the train"),
    pytest.param(["layer", "--quick", "--device", "cuda"], "--device cuda: this machine has no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
])
def test_a_setting_the_benchmarks_cannot_run_is_one_error_line(monkeypatch, capsys, args, named):
    monkeypatch.setattr("sys.argv", ["acda", "bench", *args])
    assert run() == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"acda: error: {named}")


def test_page_fault_count_sees_memory_mapped_afresh_and_not_memory_reused():
    """What the train view's page-fault column counts: writing 64 MB of newly mapped memory faults on every page
    (at least once per 2 MB huge page), writing it again does not."""
    pytest.importorskip("resource")  # POSIX: the count's source
    from acda_lightning.bench.measure import counting_page_faults

    size, page = 64 << 20, mmap.PAGESIZE
    one_byte_per_page = b"\1" * (size // page)
    fresh, reused = [], []
    with mmap.mmap(-1, size) as region:
        def write_every_page():
            region[::page] = one_byte_per_page

        counting_page_faults(write_every_page, fresh)()
        counting_page_faults(write_every_page, reused)()
    assert fresh[0] >= size // (2 << 20)
    assert reused[0] < fresh[0] / 4


def test_table7_trains_ad_resnet_s_conv_and_acda_and_predicts_dfn_memory(capsys):
    result, elapsed = timed_bench(capsys, "table7", "--quick")
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"ad_resnet_s:conv=conv", "ad_resnet_s:conv=acda"}
    check_step_times(list(rows.values()), elapsed)
    # Table 7: ACDA (two-layer) has fewer parameters than the conv net, 2.28M vs 4.60M, 4.6 vs 3.7 GB, 0.46 vs 0.53 s
    assert rows["ad_resnet_s:conv=acda"]["parameters"] < rows["ad_resnet_s:conv=conv"]["parameters"]
    assert result["paper"] == {"conv": {"params": 4.60e6, "memory_gb": 3.7, "seconds": 0.53},
                               "acda": {"params": 2.28e6, "memory_gb": 4.6, "seconds": 0.46}}
    assert result["dfn"]["predicted_filter_bytes_paper_setting"] > result["dfn"]["predicted_filter_bytes_here"] > 0


@pytest.mark.slow
def test_train_view_times_each_network_against_its_conv_twin(capsys):
    """About 70 s on 2 loaded cores: resnet18 (to_acda), Ad-ResNet-s and LeNet, conv and ACDA each."""
    result = bench_json(capsys, "train", "--quick")
    assert result["machine"]["isa"] and result["machine"]["cpu"]
    models = [row["model"] for row in result["rows"]]
    assert models == ["resnet18:conv=conv", "resnet18:conv=acda", "ad_resnet_s:conv=conv", "ad_resnet_s:conv=acda",
                      "lenet:conv=conv", "lenet:conv=acda"]
    assert all(row["ratio_to_conv"]["median"] > 0 for row in result["rows"][1::2])


def test_layer_view_under_bf16_autocast_runs_every_forward_in_bf16(capsys, monkeypatch):
    """`--autocast bf16` times conv and ACDA alike under torch.autocast (what bf16-mixed training runs)."""
    from acda_lightning.bench import layer

    output_dtypes = {}
    measured_step = layer.step

    def recording_step(module, x, mode, autocast=None):
        kind = type(module).__name__
        module.register_forward_hook(lambda _, args, output: output_dtypes.setdefault(kind, set()).add(output.dtype))
        return measured_step(module, x, mode, autocast)

    monkeypatch.setattr(layer, "step", recording_step)
    result = bench_json(capsys, "layer", "--quick", "--impls", "basis", "fused", "--autocast", "bf16")
    # (the DFN baseline computes in fp32 under autocast: its own choice, timed as it runs)
    assert output_dtypes["Conv2d"] == output_dtypes["ACDAConv2d"] == {torch.bfloat16}
    assert {row["autocast"] for row in result["layer_rows"]} == {"torch.bfloat16"}
    main(["bench", "layer", "--quick", "--impls", "basis", "--autocast", "bf16"])
    assert "(autocast bfloat16, conv and ACDA alike)" in capsys.readouterr().out
