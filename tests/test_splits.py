"""Model selection never sees the test set: for every config, on its task's synthetic data in the official
format, the images validation evaluates (and the best checkpoint is chosen on) are none of the test images."""

import hashlib
import importlib
from pathlib import Path

import pytest
import yaml

from acda_lightning.cli import main

CONFIGS = sorted(p.resolve() for p in Path("tasks").rglob("*.yaml") if not p.name.startswith("_"))
# The toy study trains to convergence on the training loss and tests its final weights: nothing is chosen on
# validation, and its test reports the held-out map that validation plots (test_toy_chooses_nothing_on_validation).
SELECTING = [config for config in CONFIGS if config.parent.name != "toy"]
TOY = [config for config in CONFIGS if config.parent.name == "toy"]
INPUT_KEYS = ("image", "lr", "noisy")  # what each task's network reads (crowd, SR, denoise); classification: batch[0]


def _resolved(config: Path, capsys) -> dict:
    """The config as the CLI resolves it (its included _data/_trainer files and defaults): `acda fit --print_config`."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(config), "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def _class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _instantiate(section: dict):
    """A ``class_path`` + ``init_args`` section, as the CLI instantiates it."""
    return _class(section["class_path"])(**section.get("init_args", {}))


def _datamodule(config: Path, capsys):
    data = _resolved(config, capsys)["data"]
    if "num_workers" in data["init_args"]:
        data["init_args"]["num_workers"] = 0  # the same samples, without worker processes
    datamodule = _instantiate(data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def _input_hashes(loader) -> list[str]:
    """A content hash of every input image a loader serves (every key of a sample that the network reads)."""
    hashes = []
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            tensors = [batch[0]]
        else:
            tensors = [value for key, value in batch.items() if key in INPUT_KEYS or key.endswith("_image")]
        hashes += [hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest() for tensor in tensors for image in tensor]
    return hashes


@pytest.mark.parametrize("config", SELECTING, ids=lambda config: f"{config.parent.name}/{config.stem}")
def test_validation_never_sees_a_test_input(config, synthetic_workdir, monkeypatch, capsys):
    monkeypatch.chdir(synthetic_workdir(config.parent.name))  # the configs read data/<Dataset>
    datamodule = _datamodule(config, capsys)
    validation, test = _input_hashes(datamodule.val_dataloader()), _input_hashes(datamodule.test_dataloader())
    assert validation and test
    shared = set(validation) & set(test)
    assert not shared, f"{len(shared)} of the {len(set(validation))} validation images are test images"
    assert "held out of training" in datamodule.validation_split


@pytest.mark.parametrize("config", TOY, ids=lambda config: f"{config.parent.name}/{config.stem}")
def test_toy_chooses_nothing_on_validation(config, capsys):
    resolved = _resolved(config, capsys)
    model_class = _class(resolved["model"]["class_path"])
    assert model_class.checkpoint_monitor is None  # no best checkpoint: test takes the final weights
    monitors = [callback.get("init_args", {}).get("monitor", "") for callback in resolved["trainer"]["callbacks"] or []]
    assert not [monitor for monitor in monitors if not monitor.startswith("train/")], monitors
    assert "held-out map" in _instantiate(resolved["data"]).validation_split
