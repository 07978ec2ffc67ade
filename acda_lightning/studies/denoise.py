"""The SIDD denoising study (paper Sec. 4.3, Table 5): reports/denoise/ from the three sidd_* runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import paper
from ..plots import image_grid
from ..models import create_model
from ..tasks.denoise import denoiser_kwargs
from ..utils import write_json, write_text
from . import register_study
from .common import load_predictions, load_run, missing_runs, run_names

def table5() -> dict[str, tuple]:
    """key: (the run of tasks/denoise/sidd_<key>.yaml, the paper's row, its parameters, PSNR, SSIM)."""
    names = run_names("denoise")
    return {key: (names[f"sidd_{key}"], *row) for key, row in paper.TABLE5.items()}


def denoiser_parameters(hparams: dict) -> int:
    """Parameters of the denoising network alone (what Table 5 counts; VDNet's sigma net is training-only)."""
    net_kwargs = denoiser_kwargs(hparams.get("net_kwargs"), hparams["objective"])
    return sum(p.numel() for p in create_model(hparams["net"], **net_kwargs).parameters())


@register_study("denoise")
def build_denoise(root: Path) -> list[str]:
    """reports/denoise/: metrics.json, report.md (ours beside Table 5) and figure.png (every model on one block)."""
    table = table5()
    runs = {key: load_run(root, row[0]) for key, row in table.items()}
    missing = [table[key][0] for key, record in runs.items() if record is None]
    if len(missing) == len(table):
        return [missing_runs(root, "denoise", missing, "make train-denoise", "tasks/denoise/<name>.yaml")]
    metrics = {}
    for key, record in runs.items():
        if record is not None:
            test = record["metrics"]
            metrics[key] = {
                "psnr": test["test/psnr"],
                "ssim": test["test/ssim"],
                "noisy_psnr": test["test/noisy_psnr"],
                "noisy_ssim": test["test/noisy_ssim"],
                "denoiser_parameters": denoiser_parameters(record["hparams"]),
                "total_parameters": record["parameters"]["total"],
                "steps": record["training"]["steps"],
            }
    out = root / "denoise"
    write_json(out / "metrics.json", {"runs": metrics, "missing": missing})
    write_text(out / "report.md", _markdown(metrics, runs, missing))
    _figure(root, runs, out / "figure.png")
    summary = ", ".join(f"{table[key][1]} {value['psnr']:.2f} dB" for key, value in metrics.items())
    return [f"denoise: {out}/report.md ({summary}{'; missing ' + ', '.join(missing) if missing else ''})"]


def _markdown(metrics: dict, runs: dict, missing: list[str]) -> str:
    lines = [
        "# Real-world denoising on SIDD (paper Sec. 4.3, Table 5)",
        "",
        "PSNR (dB) / SSIM on the SIDD sRGB validation blocks, RGB, outputs rounded to 8 bits; SSIM with an",
        "11x11 Gaussian window (sigma 1.5) over the valid region, averaged over the three channels (BasicSR",
        "convention). Parameters: the denoising network alone, as Table 5 counts them (VDNet's sigma",
        "network is used only in training; the total is in brackets).",
        "",
        "| model | params (ours) | params (paper) | PSNR (ours) | PSNR (paper) | SSIM (ours) | SSIM (paper) | noisy input PSNR / SSIM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, (run, label, paper_params, paper_psnr, paper_ssim) in table5().items():
        if key in metrics:
            m = metrics[key]
            params = f"{m['denoiser_parameters'] / 1e6:.2f}M"
            if m["total_parameters"] != m["denoiser_parameters"]:
                params += f" ({m['total_parameters'] / 1e6:.2f}M)"
            lines.append(
                f"| {label} | {params} | {paper_params / 1e6:.2f}M | {m['psnr']:.2f} | {paper_psnr:.2f} | "
                f"{m['ssim']:.3f} | {paper_ssim:.3f} | {m['noisy_psnr']:.2f} / {m['noisy_ssim']:.3f} |"
            )
        else:
            lines.append(f"| {label} | (run `{run}` missing) | {paper_params / 1e6:.2f}M | - | {paper_psnr:.2f} | - | {paper_ssim:.3f} | - |")
    lines += ["", "## How each run was trained (from its record)", ""]
    for key, record in runs.items():
        if record is not None:
            hp, training = record["hparams"], record["training"]
            lines.append(
                f"- `{record['run']}`: net `{hp['net']}` {hp.get('net_kwargs') or {}}, objective `{hp['objective']}`"
                + (f" (eps0^2 {hp['eps2']:g}, sigma window {hp['sigma_window']})" if hp["objective"] == "vdnet" else "")
                + f", Adam lr {hp['lr']:g} halved (x{hp['lr_decay']:g}) every {hp['lr_decay_epochs']} epochs; "
                f"{training['steps']} steps, {training['epochs']} epochs, {training['fit_seconds']:.0f} s on "
                f"{record['environment']['device']}."
            )
    if missing:
        lines += ["", f"Missing runs (no number shown for them): {', '.join(missing)}."]
    lines += [
        "",
        "A run on the synthetic set (`acda data synth denoise`) checks the pipeline; only runs on SIDD itself",
        "are comparable with the paper's column.",
        "",
        "![every model on one validation block](figure.png)",
    ]
    return "\n".join(lines) + "\n"


def _figure(root: Path, runs: dict, path: Path) -> None:
    """The first test block: noisy, each finished model's output, ground truth."""
    table = table5()
    predictions = {key: load_predictions(root, table[key][0]) for key, record in runs.items() if record is not None}
    first = next(iter(predictions.values()))
    hwc = lambda image: np.asarray(image).transpose(1, 2, 0)  # noqa: E731
    row = [(f"noisy {first['noisy_psnr'][0]:.2f} dB", hwc(first["noisy"][0]))]
    row += [(f"{table[key][1]} {p['denoised_psnr'][0]:.2f} dB", hwc(p["denoised"][0])) for key, p in predictions.items()]
    row.append(("ground truth", hwc(first["clean"][0])))
    image_grid([row], path, title=f"SIDD {first['names'][0]}")
