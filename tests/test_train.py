"""lightning-hydra-template style: every config runs fast_dev_run through the real CLI; the toy study
reproduces the paper's claim end to end."""

import json
from pathlib import Path

import pytest
import yaml

from acda_lightning.cli import main
from acda_lightning.studies import build_reports

from helpers import assert_drawn_png

CONFIGS = sorted(p for p in Path("tasks").rglob("*.yaml") if not p.name.startswith("_"))


# The runs behind the paper's results (Fig. 6, Tables 1-5), by the report name their config gives them.
PAPER_RUNS = {
    "toy_conv", "toy_acda",
    *(f"{data}_{model}" for data in ("cifar10", "cifar100") for model in ("lenet", "lenet_acda")),
    *(f"imagenet_ad_resnet_{variant}" for variant in "sml"),
    *(f"crowd_{data}_{model}" for data in ("sha", "qnrf") for model in ("baseline", "ad_resnet_s", "ad_resnet_m")),
    *(f"realsr_{version}_x{scale}" for version in ("v1", "v3") for scale in (2, 3, 4)),
    "sidd_baseline_mse", "sidd_acda_mse", "sidd_acda_vdnet",
}  # fmt: skip


def test_every_paper_result_has_a_config():
    """The configs every test below runs (fast_dev_run, predict) include one per run of the paper."""
    names = {yaml.safe_load(config.read_text())["report"]["name"] for config in CONFIGS}
    assert PAPER_RUNS <= names, sorted(PAPER_RUNS - names)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_fast_dev_run(config, tmp_path, monkeypatch, synthetic_workdir, acda_fit):
    """Every config, one batch of fit and test, on its task's synthetic data in the official layout."""
    config = config.resolve()
    monkeypatch.chdir(synthetic_workdir(config.parent.name))  # configs read data/<Dataset>
    record = acda_fit(config, "--trainer.fast_dev_run", "true")
    name = next(p for p in (tmp_path / "reports").iterdir())
    assert not (name / "metrics.json").exists(), "a fast_dev_run never becomes the run's record"
    (name,) = list((name / "runs").iterdir())
    assert record["training"]["steps"] == 1 and record["shortened"] == ["fast_dev_run=True"]
    assert record["metrics"] and all(key.startswith("test/") for key in record["metrics"])
    report = (name / "report.md").read_text()
    assert "fast_dev_run=True" in report and all(key in report for key in record["metrics"])
    assert_drawn_png(name / "learning_curves.png")


def test_toy_study_reproduces_the_paper(tmp_path, acda_fit):
    """The paper's Fig. 6 claims: ACDA's MSE an order of magnitude below Conv's; both outputs shift exactly."""
    for name in ("conv", "acda"):
        acda_fit(Path("tasks/toy") / f"{name}.yaml")
    (line,) = build_reports(tmp_path / "reports", only="toy")
    assert "MSE ratio" in line
    metrics = json.loads((tmp_path / "reports/toy/metrics.json").read_text())
    assert {"conv_mse", "acda_mse", "conv_shift_max_abs_diff", "acda_shift_max_abs_diff"} <= set(metrics)
    assert metrics["conv_mse"] >= 10 * metrics["acda_mse"]
    assert metrics["conv_shift_max_abs_diff"] <= 1e-5 and metrics["acda_shift_max_abs_diff"] <= 1e-5
    assert metrics["acda_heldout_mse"] < metrics["conv_heldout_mse"] / 5  # not just memorised
    for name in ("figure.png", "learning_curves.png"):
        assert_drawn_png(tmp_path / "reports/toy" / name)
    study = (tmp_path / "reports/toy/report.md").read_text()
    assert "SGD (lr 0.01, momentum 0.9)" in study and "converged after" in study
    assert f"{metrics['conv_mse']:.3e}" in study and f"{metrics['acda_mse']:.3e}" in study

    # A shortened run afterwards changes neither the full runs' records nor the study's numbers.
    records = {name: (tmp_path / f"reports/toy_{name}/metrics.json").read_text() for name in ("conv", "acda")}
    acda_fit(Path("tasks/toy/acda.yaml"), "--trainer.fast_dev_run", "true")
    acda_fit(Path("tasks/toy/conv.yaml"), "--trainer.max_epochs", "1")
    assert build_reports(tmp_path / "reports", only="toy") == [line]
    assert json.loads((tmp_path / "reports/toy/metrics.json").read_text()) == metrics
    for name, text in records.items():
        assert (tmp_path / f"reports/toy_{name}/metrics.json").read_text() == text
    assert len(list((tmp_path / "reports/toy_acda/runs").iterdir())) == 2


def test_report_lists_missing_runs_and_invents_nothing(tmp_path):
    lines = build_reports(tmp_path)
    (toy,) = [line for line in lines if line.startswith("toy:")]
    assert all("run `" in line for line in lines), "every study says which command makes its runs"
    assert all(": missing runs [" in line for line in lines), "every study names the runs it lacks"
    assert "missing runs" in toy and "shortened" not in toy
    assert not (tmp_path / "toy").exists()
    assert "missing runs" in (tmp_path / "README.md").read_text()
    (tmp_path / "toy_acda/runs/20260101-000000-abcd").mkdir(parents=True)
    (tmp_path / "toy_acda/runs/20260101-000000-abcd/metrics.json").write_text("{}")
    assert "only shortened runs exist for ['toy_acda']" in build_reports(tmp_path, only="toy")[0]
    (tmp_path / "sidd_acda_mse/runs/20260101-000000-abcd").mkdir(parents=True)
    (tmp_path / "sidd_acda_mse/runs/20260101-000000-abcd/metrics.json").write_text("{}")
    assert "only shortened runs exist for ['sidd_acda_mse']" in build_reports(tmp_path, only="denoise")[0]


def _lightest(configs: list[Path]) -> Path:
    return min(configs, key=lambda p: (any(big in p.name for big in ("_m", "_l")), p.name))


PREDICT_CONFIGS = [
    _lightest([c for c in CONFIGS if c.parent == folder]) for folder in sorted({c.parent for c in CONFIGS}) if folder.name != "toy"
]  # the toy task's predict is tested in test_runs.py


@pytest.mark.parametrize("config", PREDICT_CONFIGS, ids=str)
def test_predict_writes_the_tasks_outputs_through_the_cli(config, tmp_path, monkeypatch, synthetic_workdir):
    """`acda predict` on each task's synthetic test split writes its files to --predict_dir."""
    config = config.resolve()
    monkeypatch.chdir(synthetic_workdir(config.parent.name))
    out = tmp_path / "predictions"
    main(["predict", "-c", str(config), "--predict_dir", str(out), "--allow_untrained", "true", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "runs"), "--report.root", str(tmp_path / "reports")])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_size > 0 for p in files)
    assert not list(out.rglob(".*.tmp")), "every file is written atomically"
