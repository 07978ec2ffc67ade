"""`acda bench roofline`: counted multiply-adds and bytes, and the predicted time at H100 peaks, against
numbers worked out by hand for Table 6's layer (C = O = 256, 100x100, m = 6; bf16 = 2 bytes)."""

import json

import pytest

from acda_lightning.cli import main


def roofline_rows(capsys, *args):
    assert main(["bench", "roofline", "--format", "json", *args]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    return {(row["kernel"], row["kernel_size"], row["batch"]): row for row in rows}


def test_conv_and_basis_forward_match_a_hand_count(capsys):
    rows = roofline_rows(capsys, "--kernel-sizes", "3", "7", "--batch", "8")
    assert len(rows) == 2 * 4
    rows.update(roofline_rows(capsys, "--kernel-sizes", "7", "--batch", "1"))
    conv = rows["conv", 7, 1]["forward"]
    # 256*256*49*100^2 multiply-adds; x + y (256*100^2 each) + weights (256*256*49), 2 bytes each
    assert conv["tensor_macs"] == 32_112_640_000 and conv["cuda_core_macs"] == 0
    assert conv["bytes"] == 16_662_528
    # compute-bound: 2 * 32.11264e9 FLOP / 989.4e12 FLOP/s
    assert conv["predicted_ms"] == pytest.approx(0.0649134, rel=1e-5)
    basis = rows["basis", 3, 8]["forward"]
    # 1x1 over C*m: 8*256*256*6*1e4; depthwise with K = 6 bases (9 taps) + the alpha contraction (K per atom)
    assert basis["tensor_macs"] == 31_457_280_000
    assert basis["cuda_core_macs"] == 8 * 256 * 6 * 10**4 * 9 + 8 * 256 * 6 * 10**4 * 6 == 1_843_200_000
    # (x + R) + (R + alpha + Z) + (Z + y), R = Z = 122.88M, x = y = 20.48M, alpha = 2.88M elements, 2 bytes
    assert basis["bytes"] == 1_070_720_000
    # memory-bound: 1.07072e9 B / 3.35e12 B/s (compute would take 0.119 ms)
    assert basis["predicted_ms"] == pytest.approx(0.3196179, rel=1e-5)


def test_markdown_says_it_is_a_prediction(capsys):
    assert main(["bench", "roofline", "--kernel-sizes", "7", "--batch", "32"]) == 0
    text = capsys.readouterr().out
    assert "PREDICTED (not measured) at H100 SXM5 peaks" in text
    assert "| 7 | 32 | triton |" in text and "| 7 | 32 | conv |" in text


def test_triton_counts_its_padded_dots_and_beats_half_a_conv_at_k7(capsys):
    rows = roofline_rows(capsys, "--kernel-sizes", "7", "--batch", "32")
    forward = rows["triton", 7, 32]["forward"]
    # window dots: 49 taps padded to 64, 6 atoms to 8, once per 128-wide output block (2 at 256 outputs);
    # the 1x1 over (256 channels x 8 padded atoms) into 256 outputs; 32 images of 100^2 pixels
    window, pointwise = 32 * 10**4 * 256 * 64 * 8, 32 * 10**4 * 256 * 256 * 8
    assert forward["tensor_macs"] == 2 * window + pointwise
    assert rows["triton", 7, 32]["forward_backward"]["layer_vs_conv"] <= 0.5


def test_any_odd_kernel_size_counts_its_own_bases(capsys):
    """k=9 keeps 4 scales x 6 = 24 Fourier-Bessel bases: the generator predicts m*K = 144 values per pixel."""
    generator = roofline_rows(capsys, "--kernel-sizes", "9", "--batch", "1")["generator", 9, 1]["forward"]
    assert generator["tensor_macs"] == 100 * 100 * (256 * 64 + 64 * 6 * 24 * 9)
