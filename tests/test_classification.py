"""Classification as a user runs it: the CLI on data written in the official formats (CIFAR pickles, ImageFolder)."""

import json
from pathlib import Path

import pytest
import torch

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
    """The honest learning check: 100 synthetic CIFAR-10 images (class = colour + shape), 8 epochs of 10 steps;
    the loss falls by half and the 20 held-out test images are classified far above chance (10 %)."""
    record = acda_fit(
        CONFIGS / f"{config}.yaml", *_on_synthetic_data(workdir, config), "--data.batch_size", "10", "--model.lr", "0.03",
        budget={"max_epochs": 8},
    )
    losses = [row["train/loss"] for row in record["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    assert record["metrics"]["test/acc1"] >= 0.4, record["metrics"]
    assert record["training"]["steps"] == 80
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
    assert len(set(cifar100.train_set.targets)) == 100
    folder = ImageFolder(workdir / "data/ImageNet/val", allow_empty=True)
    assert len(folder.classes) == 1000 and len(folder) >= 2


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
    assert record["label"] == int(datamodule.eval_set.targets[0])
    assert len(record["top"]) == 5 and record["top"][0]["name"].startswith("class_")
    assert sum(entry["probability"] for entry in record["top"]) <= 1 + 1e-6
