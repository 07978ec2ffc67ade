"""Classification as a user runs it: the CLI on data written in the official formats (CIFAR pickles, ImageFolder)."""

import hashlib
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from acda_lightning.cli import run
from acda_lightning.data import ClassificationDataModule
from acda_lightning.studies import build_reports
from acda_lightning.tasks.classification import ImageClassification, learning_rate_scale

CONFIGS = Path("tasks/classification").resolve()


@pytest.fixture(scope="module")
def workdir(synthetic_workdir):
    """A folder whose data/ holds `acda data synth classification`: CIFAR-10/100 pickles and an ImageNet tree."""
    return synthetic_workdir("classification")


@pytest.fixture
def single_thread():
    """LeNet-sized steps gain nothing from intra-op threads; on a shared 2-core machine they only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _on_synthetic_data(workdir, config: str) -> list[str]:
    """`acda fit` overrides that run ``config`` on the synthetic data, without worker processes or model summary."""
    dataset = "ImageNet" if config.startswith("imagenet") else "CIFAR"
    return ["--data.root", str(workdir / "data" / dataset), "--data.num_workers", "0", "--trainer.enable_model_summary", "false"]


@pytest.mark.parametrize("config", ["cifar10_lenet", "cifar10_lenet_acda"])
def test_lenet_learns_a_fixed_image_set(config, workdir, single_thread, acda_fit):
    """The honest learning check: 100 synthetic CIFAR-10 training images (class = colour + shape), 10 of them held
    out to validate, 8 epochs of 9 steps; the loss falls by half and the 20 test images, which neither training nor
    checkpoint selection saw, are classified far above chance (10 %)."""
    record = acda_fit(
        CONFIGS / f"{config}.yaml", *_on_synthetic_data(workdir, config), "--data.batch_size", "10", "--model.lr", "0.03",
        budget={"max_epochs": 8},
    )
    losses = [row["train/loss"] for row in record["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    assert record["metrics"]["test/acc1"] >= 0.4, record["metrics"]
    assert record["training"]["steps"] == 72
    # The best checkpoint is tested, yet the record keeps this fit's whole history and wall time.
    assert len(record["history"]) == 8 and record["training"]["fit_seconds"] > 0


def test_missing_cifar_batch_file_is_named(workdir, tmp_path):
    broken = tmp_path / "CIFAR"
    (broken / "cifar-10-batches-py").mkdir(parents=True)
    for source in (workdir / "data/CIFAR/cifar-10-batches-py").iterdir():
        if source.name != "data_batch_3":
            (broken / "cifar-10-batches-py" / source.name).write_bytes(source.read_bytes())
    datamodule = ClassificationDataModule("cifar10", root=str(broken))
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/data_batch_3 is missing.*acda data synth classification"):
        datamodule.setup("fit")


def test_num_classes_that_do_not_match_the_data_fail_before_training(workdir, tmp_path, acda_fit):
    with pytest.raises(ValueError, match=r"predicts 10 classes but .* holds 100.*num_classes: 100"):
        acda_fit(CONFIGS / "cifar100_lenet.yaml", *_on_synthetic_data(workdir, "cifar100_lenet"),
                 "--model.net_kwargs", "{num_classes: 10, conv: conv}")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_corrupt_jpeg_is_one_clear_error_naming_the_file(workdir, tmp_path):
    root = tmp_path / "ImageNet"
    for source in (workdir / "data/ImageNet").rglob("*"):
        target = root / source.relative_to(workdir / "data/ImageNet")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(source.read_bytes())
    corrupt = next((root / "train").rglob("*.JPEG"))
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    datamodule = ClassificationDataModule("imagenet", root=str(root), crop_size=32, num_workers=0)
    datamodule.setup("fit")
    with pytest.raises(ValueError, match=rf"cannot read image .*{corrupt.name}.*corrupt or not an image"):
        next(iter(datamodule.train_dataloader()))


def test_synthetic_sets_read_as_the_official_formats(workdir):
    from torchvision.datasets import ImageFolder

    cifar100 = ClassificationDataModule("cifar100", root=str(workdir / "data/CIFAR"))
    cifar100.setup("fit")
    image, label = cifar100.train_set[0]
    assert cifar100.num_classes == 100 and image.shape == (3, 32, 32) and 0 <= label < 100
    assert len(set(cifar100.train_set.targets) | set(cifar100.val_set.targets)) == 100
    folder = ImageFolder(workdir / "data/ImageNet/val", allow_empty=True)
    assert len(folder.classes) == 1000 and len(folder) >= 2
    # Python 2 pickles, as the official batches: keys are bytes read as the CIFAR page reads them, str as torchvision does
    batch = workdir / "data/CIFAR/cifar-10-batches-py/data_batch_1"
    as_bytes, as_latin1 = (pickle.loads(batch.read_bytes(), encoding=encoding) for encoding in ("bytes", "latin1"))
    assert {b"data", b"labels"} <= set(as_bytes) and {"data", "labels"} <= set(as_latin1)
    assert np.array_equal(as_bytes[b"data"], as_latin1["data"]) and as_latin1["data"].shape == (20, 3072)


def _raw_images(subset) -> set[str]:
    """Content hashes of the images (as read, before any transform) of a training or validation split."""
    return {hashlib.sha256(np.asarray(subset.dataset[index][0]).tobytes()).hexdigest() for index in subset.indices}


def test_validation_is_a_seeded_tenth_held_out_of_training(workdir):
    """CIFAR: 10 of the 100 synthetic training images (as 5,000 of 50,000) validate and never train; the seed picks them."""
    chosen = []
    for seed in (0, 1):
        datamodule = ClassificationDataModule("cifar10", root=str(workdir / "data/CIFAR"), num_workers=0, val_seed=seed)
        datamodule.setup("fit")
        training, validation = _raw_images(datamodule.train_set), _raw_images(datamodule.val_set)
        assert (len(training), len(validation)) == (90, 10) and not training & validation
        chosen.append(validation)
    assert chosen[0] != chosen[1]
    assert datamodule.validation_split == "10% of the training images (seed 1), held out of training"


def test_imagenet_holds_out_10_training_images_per_class(workdir):
    datamodule = ClassificationDataModule("imagenet", root=str(workdir / "data/ImageNet"), num_workers=0, crop_size=32)
    datamodule.setup("fit")
    assert sorted(datamodule.val_set.targets) == [0] * 10 + [1] * 10  # the 2 filled synthetic classes
    assert not set(datamodule.val_set.indices) & set(datamodule.train_set.indices)
    assert sorted(datamodule.val_set.indices + datamodule.train_set.indices) == list(range(24))
    too_many = ClassificationDataModule("imagenet", root=str(workdir / "data/ImageNet"), val_per_class=12)
    with pytest.raises(ValueError, match=r"n00000000 holds 12 images, too few to hold out val_per_class=12"):
        too_many.setup("fit")


def _broken_cifar(workdir, tmp_path) -> Path:
    """A copy of the synthetic CIFAR-10 folder under tmp_path, to damage."""
    shutil.copytree(workdir / "data/CIFAR/cifar-10-batches-py", tmp_path / "CIFAR/cifar-10-batches-py")
    return tmp_path / "CIFAR"


def _acda_error(tmp_path, monkeypatch, capsys, root: Path) -> str:
    """`acda fit` of cifar10_lenet on ``root`` as the console script runs it: exit 2 and one `acda: error:` line."""
    monkeypatch.setattr(sys, "argv", ["acda", "fit", "-c", str(CONFIGS / "cifar10_lenet.yaml"), "--data.root", str(root),
                                      "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path / "runs"),
                                      "--report.root", str(tmp_path / "reports"), "--trainer.enable_progress_bar", "false"])
    capsys.readouterr()
    assert run() == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("acda: error:")]
    return line


def test_truncated_cifar_batch_is_one_clear_error(workdir, tmp_path, monkeypatch, capsys):
    root = _broken_cifar(workdir, tmp_path)
    batch = root / "cifar-10-batches-py/data_batch_2"
    batch.write_bytes(batch.read_bytes()[:3000])
    line = _acda_error(tmp_path, monkeypatch, capsys, root)
    assert f"cannot read CIFAR file {batch} (pickle data was truncated)" in line
    assert "extract the python version from https://www.cs.toronto.edu/~kriz/cifar.html into" in line


def test_cifar_batch_with_bytes_keys_is_read_and_a_missing_key_is_named(workdir, tmp_path, monkeypatch, capsys, acda_fit):
    """A batch re-saved from python 3 after the CIFAR page's ``pickle.load(f, encoding="bytes")`` has bytes keys
    (b"data", b"labels"): it holds the official content and is read as it; without b"labels" the error names the key."""
    root = _broken_cifar(workdir, tmp_path)
    batch = root / "cifar-10-batches-py/data_batch_1"
    content = {key.encode(): value for key, value in pickle.loads(batch.read_bytes(), encoding="latin1").items()}
    batch.write_bytes(pickle.dumps(content))  # python 3 bytes keys
    record = acda_fit(CONFIGS / "cifar10_lenet.yaml", *_on_synthetic_data(workdir, "cifar10_lenet"), "--data.root", str(root),
                      "--trainer.fast_dev_run", "true")
    assert record["training"]["steps"] == 1
    resaved, official = (ClassificationDataModule("cifar10", root=str(folder), num_workers=0) for folder in (root, workdir / "data/CIFAR"))
    for datamodule in (resaved, official):
        datamodule.setup("fit")
    assert np.array_equal(resaved.train_set.dataset.images, official.train_set.dataset.images)
    assert resaved.train_set.targets == official.train_set.targets

    del content[b"labels"]
    batch.write_bytes(pickle.dumps(content))
    line = _acda_error(tmp_path, monkeypatch, capsys, root)
    assert f"CIFAR file {batch} has no 'labels' entry (found ['batch_label', 'data'])" in line


def test_schedule_warms_up_then_decays():
    cosine = learning_rate_scale(100, warmup_steps=10, schedule="cosine", milestone_steps=[], gamma=0.1)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(10) == pytest.approx(1.0) and cosine(55) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    step = learning_rate_scale(100, warmup_steps=0, schedule="step", milestone_steps=[30, 60], gamma=0.1)
    assert [step(s) for s in (0, 29, 30, 60, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_weight_decay_skips_norms_and_biases():
    task = ImageClassification("ad_resnet_s", {"num_classes": 10}, weight_decay=1e-4)
    task.trainer = type("T", (), {"estimated_stepping_batches": 10, "max_epochs": 1})()
    groups = task.configure_optimizers()["optimizer"].param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0
    for name, parameter in task.net.named_parameters():
        assert (id(parameter) in decayed) == (parameter.ndim > 1), name


def test_study_puts_ours_beside_tables_1_and_2_and_invents_nothing(tmp_path):
    run = tmp_path / "cifar10_lenet_acda"
    run.mkdir()
    hparams = {"net": "lenet", "net_kwargs": {"num_classes": 10, "conv": "acda"}, "optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "schedule": "cosine", "gamma": 0.1,
               "milestones": [30], "warmup_epochs": 1, "label_smoothing": 0.0}
    record = {"run": run.name, "metrics": {"test/acc1": 0.8, "test/acc5": 0.99}, "parameters": {"total": 143888},
              "hparams": hparams, "training": {"epochs": 100, "steps": 39000}}
    (run / "metrics.json").write_text(json.dumps(record))
    (line,) = [line for line in build_reports(tmp_path) if line.startswith("classification")]
    assert "missing runs" in line and "imagenet_ad_resnet_s" in line
    report = (tmp_path / "classification/report.md").read_text()
    assert "| LeNet + ACDA | 20.00 | 16.27 | not run | 49.53 |" in report
    assert "| Ad-ResNet-s | not run | 3.85 | not run | 28.81 | not run | 9.62 |" in report
    metrics = json.loads((tmp_path / "classification/metrics.json").read_text())
    assert metrics == {"cifar10_lenet_acda_top1_error": pytest.approx(20.0), "cifar10_lenet_acda_top5_error": pytest.approx(1.0),
                       "cifar10_lenet_acda_parameters": 143888}


def test_predictions_are_written_per_image_with_class_names(workdir, tmp_path):
    import lightning as L

    datamodule = ClassificationDataModule("cifar10", root=str(workdir / "data/CIFAR"), batch_size=4, num_workers=0)
    task = ImageClassification("lenet", {"num_classes": 10, "conv": "conv"})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_predict_batches=1)
    (outputs,) = trainer.predict(task, datamodule=datamodule)
    batch = next(iter(datamodule.predict_dataloader()))
    paths = task.write_predictions(outputs, batch, tmp_path)
    assert [p.name for p in paths] == [f"test_{i:06d}.json" for i in range(4)]
    record = json.loads(paths[0].read_text())
    assert record["label"] == int(datamodule.test_set.targets[0])
    assert len(record["top"]) == 5 and record["top"][0]["name"].startswith("class_")
    assert sum(entry["probability"] for entry in record["top"]) <= 1 + 1e-6
