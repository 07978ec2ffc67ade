"""`acda bench` through the CLI: JSON shape and keys, and the Table 6 formula rows. Never timed."""

import json

import pytest

from acda_lightning.cli import main
from acda_lightning.models import list_models

TABLE6_KEYS = {
    "kernel_size", "conv_flops", "acda_conv_flops", "acda_total_flops",
    "conv_params", "acda_conv_params", "acda_total_params",
}


def bench_json(capsys, *args):
    assert main(["bench", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_table6_reproduces_the_papers_conv_rows(capsys):
    result = bench_json(capsys, "table6")
    rows = {row["kernel_size"]: row for row in result["rows"]}
    assert sorted(rows) == [3, 5, 7] and all(set(row) == TABLE6_KEYS for row in rows.values())
    for k, paper in result["paper_millions"].items():
        row = rows[int(k)]
        assert round(row["conv_flops"] / 1e5) / 10 == paper["conv_flops"]  # exact to the printed 0.1M
        assert round(row["acda_conv_flops"] / 1e5) / 10 == paper["acda_conv_flops"]
        assert round(row["acda_conv_params"] / 1e4) / 100 == paper["acda_conv_params"]
    assert rows[3]["conv_flops"] == 256 * 256 * 9 * 100 * 100 + 256 * 100 * 100
    assert rows[7]["conv_params"] == 256 * 256 * 49 + 256  # 3.21M; the paper prints 3.12M
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
    for row in rows:
        assert row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"] and row["peak_bytes"] >= 0
    assert all(row["ratio_median"] == 1.0 for row in rows if row["layer"] == "conv")
    assert plot.read_bytes()[:4] == b"\x89PNG"
    resnet18 = result["resnet18_rows"]  # every distinct 3x3 layer shape of a converted resnet18
    assert len(resnet18) == 7 and {"conv", "acda_basis", "acda_fused"} <= set(resnet18[0]["ratios"])


def test_train_view_runs_registered_models_by_name(capsys):
    result = bench_json(capsys, "train", "--quick", "--models", "toy_detector:conv=conv", "toy_detector:conv=acda")
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"toy_detector:conv=conv", "toy_detector:conv=acda"}
    assert rows["toy_detector:conv=acda"]["parameters"] != rows["toy_detector:conv=conv"]["parameters"]
    assert all(row["images_per_second"] > 0 for row in rows.values())


def test_table7_trains_ad_resnet_s_conv_and_acda_and_predicts_dfn_memory(capsys):
    result = bench_json(capsys, "table7", "--quick")
    assert result["model_registered"] is True
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"ad_resnet_s:conv=conv", "ad_resnet_s:conv=acda"}
    assert all(row["images_per_second"] > 0 for row in rows.values())
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
