"""The real-world SR study (paper Sec. 4.3, Table 4): reports/sr/ from the realsr_* runs, ours beside the paper's."""

from __future__ import annotations

from pathlib import Path

from ..paper import TABLE4
from ..utils import write_json, write_text
from . import register_study
from .common import load_run, missing_runs, task_configs

SCALES = (2, 3, 4)
VERSIONS = {"v1": "RealSR 2019 (v1)", "v3": "RealSR final (v3)"}


def configured_runs() -> dict[tuple[str, int, str], str]:
    """(version, scale, conv) -> run name (``report.name``) of every SR config, read from the YAMLs themselves."""
    runs = {}
    for config in task_configs("sr").values():
        model = config["model"]["init_args"]
        net = model.get("net_kwargs") or {}
        runs[(net.get("version", "v3"), model["scale"], net.get("conv", "acda"))] = config["report"]["name"]
    return runs


def _pair(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.2f} / {value[1]:.3f}"


@register_study("sr")
def build_sr(root: Path) -> list[str]:
    """reports/sr/: metrics.json and report.md (our PSNR/SSIM, bicubic's, the conv baseline's, beside Table 4)."""
    configured = configured_runs()
    names = list(configured.values())
    runs = {name: record for name in names if (record := load_run(root, name)) is not None}
    if not runs:
        return [missing_runs(root, "sr", names, "make train-sr SCALE=4 VERSION=v3", "tasks/sr/realsr_<v>_x<s>.yaml")]
    metrics = {}
    for name, record in runs.items():
        test = record["metrics"]
        for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
            metrics[f"{name}/{key}"] = test[f"test/{key}"]
        metrics[f"{name}/parameters"] = record["parameters"]["total"]
        metrics[f"{name}/steps"] = record["training"]["steps"]
    for version in VERSIONS:
        for scale in SCALES:
            acda, conv = configured.get((version, scale, "acda")), configured.get((version, scale, "conv"))
            if acda in runs and conv in runs:
                metrics[f"{acda}/psnr_minus_conv"] = metrics[f"{acda}/psnr"] - metrics[f"{conv}/psnr"]
    out = root / "sr"
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", _markdown(metrics, runs, configured, [n for n in names if n not in runs]))
    return [f"sr: {out}/report.md ({len(runs)} of {len(names)} runs)"]


def _ours(metrics: dict, name: str | None, prefix: str = "") -> tuple[float, float] | None:
    if name is None or f"{name}/{prefix}psnr" not in metrics:
        return None
    return metrics[f"{name}/{prefix}psnr"], metrics[f"{name}/{prefix}ssim"]


def _markdown(metrics: dict, runs: dict, configured: dict, missing: list[str]) -> str:
    lines = [
        "# Real-world super-resolution (paper Sec. 4.3, Table 4)",
        "",
        "PSNR (dB) / SSIM on the BT.601 Y channel of whole test images, `crop_border` px cut from each",
        "side (see each run's hparams); bicubic is measured by the same code on the same images.",
        "Numbers from the synthetic stand-in set (`acda data synth sr`) are not comparable with the paper's:",
        "they only show that the pipeline trains and how ACDA compares with its conv baseline.",
        "",
    ]
    for version, title in VERSIONS.items():
        baseline = "bicubic" if version == "v1" else "LP-KPN"
        lines += [
            f"## {title}",
            "",
            f"| scale | ours ACDA | ours conv baseline | ours bicubic | paper ACDA | paper {baseline} |",
            "|---|---|---|---|---|---|",
        ]
        for scale in SCALES:
            acda, conv = configured.get((version, scale, "acda")), configured.get((version, scale, "conv"))
            lines.append(
                f"| x{scale} | {_pair(_ours(metrics, acda))} | {_pair(_ours(metrics, conv))} | "
                f"{_pair(_ours(metrics, acda, 'bicubic_') or _ours(metrics, conv, 'bicubic_'))} | "
                f"{_pair(TABLE4[(version, 'acda')][scale])} | {_pair(TABLE4[(version, baseline)][scale])} |"
            )
        lines.append("")
    lines += ["## Every run", "", "| run | net | loss | lr | steps | parameters | PSNR - bicubic | ACDA - conv PSNR |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, record in runs.items():
        hp = record["hparams"]
        gain = metrics[f"{name}/psnr"] - metrics[f"{name}/bicubic_psnr"]
        versus_conv = metrics.get(f"{name}/psnr_minus_conv")
        lines.append(
            f"| {name} | {hp['net']} {hp['net_kwargs']} x{hp['scale']} | {hp['loss']} | {hp['lr']} | "
            f"{metrics[f'{name}/steps']} | {metrics[f'{name}/parameters']} | {gain:+.2f} dB | "
            f"{'-' if versus_conv is None else f'{versus_conv:+.2f} dB'} |"
        )
    if missing:
        lines += ["", f"Missing runs (no number shown for them): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"
