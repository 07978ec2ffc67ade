"""`acda export`: tiny fits of the toy, crowd and SR nets exported through the CLI, run by onnxruntime
(and torch.export) at two input sizes against the PyTorch network; bad checkpoints and output folders."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from acda_lightning.cli import main
from acda_lightning.export import config_model, load_weights
from acda_lightning.runs import RunError

ort = pytest.importorskip("onnxruntime")

TASKS = Path(__file__).parents[1] / "tasks"
TOY = str(TASKS / "toy" / "acda.yaml")
TOY_BUDGET = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1}


def _checkpoint(tmp_path) -> str:
    (path,) = (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")
    return str(path)


def _pytorch_output(config, checkpoint, overrides, x):
    module = config_model([config], overrides)
    load_weights(module, Path(checkpoint), [config])
    with torch.no_grad():
        return module.eval()(x)


def _export_and_compare(tmp_path, config, overrides, inputs):
    """Export through the CLI; onnxruntime's output equals the network's within 1e-4 of its scale."""
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "net.onnx"
    main(["export", "-c", config, "--ckpt_path", checkpoint, "--format", "onnx", "--out", str(out), *overrides])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for x in inputs:
        expected = _pytorch_output(config, checkpoint, overrides, x)
        (output,) = session.run(None, {"images": x.numpy()})
        assert output.shape == tuple(expected.shape)
        error = np.abs(output - expected.numpy()).max() / expected.abs().max().item()
        assert error <= 1e-4, (config, tuple(x.shape), error)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".net.onnx")] == []  # no temporary left


def test_toy_net_exports_to_onnx_and_torch_export_with_dynamic_sizes(tmp_path, acda_fit):
    acda_fit(TOY, "--model.init_args.net_kwargs", json.dumps({"conv": "acda", "num_atoms": 1, "impl": "unfold"}),
             budget=TOY_BUDGET)  # fmt: skip
    overrides = ["--model.init_args.net_kwargs", json.dumps({"conv": "acda", "num_atoms": 1, "impl": "unfold"})]
    inputs = [torch.randn(1, 1, 64, 64), torch.randn(3, 1, 40, 56)]
    _export_and_compare(tmp_path, TOY, overrides, inputs)

    program_path = tmp_path / "net.pt2"
    checkpoint = _checkpoint(tmp_path)
    main(["export", "-c", TOY, "--ckpt_path", checkpoint, "--format", "exported", "--out", str(program_path), *overrides])
    program = torch.export.load(str(program_path)).module()
    for x in inputs:
        torch.testing.assert_close(program(x), _pytorch_output(TOY, checkpoint, overrides, x), rtol=1e-5, atol=1e-6)


def test_crowd_net_exports_to_onnx(tmp_path, monkeypatch, acda_fit):
    from acda_lightning.data.crowd import synth_crowd

    synth_crowd(tmp_path / "data", seed=0)
    monkeypatch.chdir(tmp_path)  # the config reads data/ShanghaiTech
    config = str(TASKS / "crowd" / "sha_ad_resnet_s.yaml")
    small = ["--data.crop_size", "64", "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.check_val_every_n_epoch", "1"]
    acda_fit(config, *small, budget={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1})
    # Two steps leave BatchNorm's running statistics unsettled and the ReLU head outputs all zeros in eval
    # mode, which any export would match: lift the 1x1 head's bias so every pixel's density is compared.
    path = _checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=False)
    (head_bias,) = [key for key, value in checkpoint["state_dict"].items() if key.endswith("bias") and value.shape == (1,)]
    checkpoint["state_dict"][head_bias] += 10.0
    torch.save(checkpoint, path)
    _export_and_compare(tmp_path, config, [], [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 48, 80)])


def test_sr_net_exports_to_onnx(tmp_path, monkeypatch, acda_fit):
    main(["data", "synth", "realsr", "--out", str(tmp_path / "data")])
    monkeypatch.chdir(tmp_path)  # the config reads data/RealSR_v3
    config = str(TASKS / "sr" / "realsr_v3_x4.yaml")
    overrides = ["--model.init_args.net_kwargs", json.dumps({"version": "v3", "conv": "acda", "width": 8, "blocks": 1})]
    tiny = ["--data.init_args.train_repeat", "1", "--data.init_args.num_workers", "0"]
    acda_fit(config, *tiny, *overrides, budget={"max_epochs": 1})
    _export_and_compare(tmp_path, config, overrides, [torch.randn(1, 3, 24, 24), torch.randn(2, 3, 20, 32)])


@pytest.fixture
def toy_checkpoint(tmp_path, acda_fit):
    acda_fit(TOY, budget=TOY_BUDGET)
    return _checkpoint(tmp_path)


def test_bad_checkpoints_and_output_folders_are_one_line_errors(tmp_path, toy_checkpoint, monkeypatch):
    crowd = str(TASKS / "crowd" / "sha_ad_resnet_s.yaml")
    with pytest.raises(RunError, match=f"checkpoint {toy_checkpoint} was saved from a different model.*config: {crowd}"):
        main(["export", "-c", crowd, "--ckpt_path", toy_checkpoint, "--out", str(tmp_path / "crowd.onnx")])
    missing = tmp_path / "missing" / "toy.onnx"
    with pytest.raises(RunError, match=f"cannot write {missing}: folder {missing.parent} does not exist"):
        main(["export", "-c", TOY, "--ckpt_path", toy_checkpoint, "--out", str(missing)])

    # A failure half-way through writing leaves neither the output nor a temporary file behind.
    out = tmp_path / "exports"
    out.mkdir()

    def fail_half_way(module, args, path, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch.onnx, "export", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        main(["export", "-c", TOY, "--ckpt_path", toy_checkpoint, "--out", str(out / "toy.onnx")])
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_a_one_line_error(tmp_path, toy_checkpoint):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    with pytest.raises(RunError, match=f"folder {folder} is not writable"):
        main(["export", "-c", TOY, "--ckpt_path", toy_checkpoint, "--out", str(folder / "toy.onnx")])
