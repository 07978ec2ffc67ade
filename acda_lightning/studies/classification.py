"""The classification study (paper Sec. 4.1, Tables 1-2): reports/classification/ from the CIFAR and ImageNet runs."""

from __future__ import annotations

import json
from pathlib import Path

from ..paper import TABLE1, TABLE2
from ..utils import write_json, write_text
from . import register_study
from .common import load_run, missing_runs, run_names
from .depthwise import markdown

# config name (tasks/classification/<name>.yaml) -> its row of Table 1 or 2
CIFAR_CONFIGS = {f"{dataset}_{model}": (dataset, model) for dataset, model in TABLE1}
IMAGENET_CONFIGS = {f"imagenet_ad_resnet_{v}{suffix}": (v, conv) for v in TABLE2 for suffix, conv in (("", "acda"), ("_conv", "conv"))}


def _errors(record: dict) -> dict:
    """Top-1/top-5 error (%) from a run's test accuracies."""
    metrics = record["metrics"]
    errors = {"top1": 100 * (1 - metrics["test/acc1"])}
    if "test/acc5" in metrics:
        errors["top5"] = 100 * (1 - metrics["test/acc5"])
    return errors


def _recipe(record: dict) -> str:
    h = record["hparams"]
    schedule = h["schedule"] if h["schedule"] == "cosine" else f"step x{h['gamma']} at epochs {list(h['milestones'])}"
    return (
        f"{h['net']} {h['net_kwargs']}; {h['optimizer']} lr {h['lr']}, weight decay {h['weight_decay']}, {schedule}, warm-up {h['warmup_epochs']} "
        f"epochs, label smoothing {h['label_smoothing']}; {record['training']['epochs']} epochs, {record['training']['steps']} steps"
    )


@register_study("classification")
def build_classification(root: Path) -> list[str]:
    """reports/classification/: metrics.json and report.md (Tables 1-2, ours beside the paper's)."""
    names = run_names("classification")
    runs = {config: load_run(root, names[config]) for config in (*CIFAR_CONFIGS, *IMAGENET_CONFIGS)}
    finished = {config: record for config, record in runs.items() if record is not None}
    missing = sorted(names[config] for config in set(runs) - set(finished))
    if not finished:
        return [missing_runs(root, "classification", missing, "make train-classification CONFIG=<name>")]
    metrics = {}
    for name, record in finished.items():
        for key, value in _errors(record).items():
            metrics[f"{name}_{key}_error"] = value
        metrics[f"{name}_parameters"] = record["parameters"]["total"]
    out = root / "classification"
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", _markdown(metrics, finished, missing) + _depthwise_section(root))
    line = f"classification: {out}/report.md ({len(finished)} of {len(runs)} runs)"
    return [line + (f"; missing runs {missing}" if missing else "")]


def _depthwise_section(root: Path) -> str:
    """The depthwise ConvNeXt-block comparison (`make study-depthwise`), when it has been run."""
    path = root / "depthwise" / "metrics.json"
    if not path.is_file():
        return "\nDepthwise ACDA vs depthwise conv: not run (`make study-depthwise`).\n"
    return "\n## Depthwise ACDA in a ConvNeXt-style block (ours; not in the paper)\n\n" + markdown(json.loads(path.read_text())) + "\n"


def _cell(metrics: dict, key: str, digits: int = 2) -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else "not run"


def _markdown(metrics: dict, finished: dict, missing: list[str]) -> str:
    lines = [
        "# Image classification (paper Sec. 4.1, Tables 1-2)",
        "",
        "## Table 1: CIFAR top-1 error (%), LeNet with its two convolutions as Conv or ACDA",
        "",
        "| model | CIFAR-10 ours | CIFAR-10 paper | CIFAR-100 ours | CIFAR-100 paper |",
        "|---|---|---|---|---|",
    ]
    for model, label in (("lenet", "LeNet"), ("lenet_acda", "LeNet + ACDA")):
        cells = []
        for dataset in ("cifar10", "cifar100"):
            cells += [_cell(metrics, f"{dataset}_{model}_top1_error"), f"{TABLE1[(dataset, model)]:.2f}"]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Table 2: ImageNet (parameters in millions, top-1 / top-5 error %)",
        "",
        "| model | params ours | params paper | top-1 ours | top-1 paper | top-5 ours | top-5 paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, (params, top1, top5) in TABLE2.items():
        for suffix, label, paper in (("", "", (params, top1, top5)), ("_conv", " (Conv baseline)", None)):
            run = f"imagenet_ad_resnet_{variant}{suffix}"
            ours_params = f"{metrics[f'{run}_parameters'] / 1e6:.2f}" if f"{run}_parameters" in metrics else "not run"
            paper_cells = [f"{value:.2f}" for value in paper] if paper else ["-", "-", "-"]
            lines.append(
                f"| Ad-ResNet-{variant}{label} | {ours_params} | {paper_cells[0]} | {_cell(metrics, f'{run}_top1_error')} | "
                f"{paper_cells[1]} | {_cell(metrics, f'{run}_top5_error')} | {paper_cells[2]} |"
            )
    lines += ["", "## Runs", "", "| run | recipe |", "|---|---|"]
    lines += [f"| {name} | {_recipe(record)} |" for name, record in sorted(finished.items())]
    if missing:
        lines += ["", f"Missing runs (not invented): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"
