"""The crowd-counting study (paper Sec. 4.2, Table 3, Figs. 7-8): reports/crowd/ from the crowd runs, and Fig. 7."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..paper import TABLE3
from ..plots import learning_curves, register_figure, save_figure
from ..utils import write_json, write_text
from . import register_study
from .common import load_predictions, load_run, missing_runs, run_names

DATASETS = {"sha": "SHTech-A", "shb": "SHTech-B", "qnrf": "UCF-QNRF"}
MODELS = {"baseline": "Baseline (standard convs)", "ad_resnet_s": "Ad-ResNet-s", "ad_resnet_m": "Ad-ResNet-m"}


def run_name(dataset: str, model: str) -> str:
    """The run of tasks/crowd/<dataset>_<model>.yaml (its report.name)."""
    return run_names("crowd")[f"{dataset}_{model}"]


@register_study("crowd")
def build_crowd(root: Path) -> list[str]:
    """reports/crowd/: metrics.json, report.md (ours beside Table 3), predictions.png, learning_curves.png."""
    runs = {(d, m): load_run(root, run_name(d, m)) for d in DATASETS for m in MODELS}
    done = {key: record for key, record in runs.items() if record is not None}
    missing = [run_name(*key) for key, record in runs.items() if record is None]
    if not done:
        return [missing_runs(root, "crowd", missing, "make train-crowd", "tasks/crowd/<dataset>_<model>.yaml")]
    metrics = {}
    for (dataset, model), record in done.items():
        prefix = run_name(dataset, model)
        metrics[f"{prefix}_mae"] = record["metrics"]["test/mae"]
        metrics[f"{prefix}_rmse"] = record["metrics"]["test/rmse"]
        metrics[f"{prefix}_parameters"] = record["parameters"]["total"]
        metrics[f"{prefix}_epochs"] = record["training"]["epochs"]
    out = root / "crowd"
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", _crowd_markdown(done, missing))
    predictions_figure({record["run"]: load_predictions(root, record["run"]) for record in done.values()}, out / "predictions.png")
    learning_curves({record["run"]: record["history"] for record in done.values()}, out / "learning_curves.png")
    summary = ", ".join(f"{record['run']} MAE {record['metrics']['test/mae']:.2f}" for record in done.values())
    return [f"crowd: {out}/report.md ({summary})" + (f"; missing runs {missing}" if missing else "")]


def predictions_figure(predictions: dict[str, dict], path: Path) -> None:
    """Paper Fig. 8, one row per run: its first test image in colour, then the true and the predicted
    density on one colour scale (0 to the larger peak of the two) with its colour bar."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(predictions), 3, figsize=(10, 2.9 * len(predictions)), squeeze=False, layout="constrained")
    for row, (run, arrays) in zip(axes, predictions.items()):
        row[0].imshow(np.clip(arrays["image"], 0, 1))
        row[0].set_title(f"{run}: test image", fontsize=9)
        peak = max(float(arrays["density"].max()), float(arrays["predicted_density"].max()), 1e-6)
        maps = [
            (f"true density, count {float(arrays['count']):.0f}", arrays["density"]),
            (f"predicted, count {float(arrays['predicted_count']):.1f}", arrays["predicted_density"]),
        ]
        for axis, (caption, density) in zip(row[1:], maps):
            shown = axis.imshow(density, cmap="jet", vmin=0, vmax=peak, interpolation="nearest")
            axis.set_title(caption, fontsize=9)
        figure.colorbar(shown, ax=list(row[1:]), shrink=0.9, label="heads per output pixel")
        for axis in row:
            axis.axis("off")
    figure.suptitle("Crowd counting: first test image per run (paper Fig. 8)")
    save_figure(figure, path)


def _pair(values) -> str:
    return "-" if values is None else f"{values[0]:.2f} / {values[1]:.2f}"


def _crowd_markdown(done: dict, missing: list[str]) -> str:
    lines = [
        "# Crowd counting (paper Sec. 4.2, Table 3)",
        "",
        "MAE / MSE of whole-image counts on each test set (MSE = root mean squared error, as the paper",
        "reports it). Ours from the runs below; the paper's from its Table 3 (it gives no SHTech-B numbers).",
        "",
        "| model | params ours | params paper | " + " | ".join(f"{name} ours | {name} paper" for name in DATASETS.values()) + " |",
        "|---" * (3 + 2 * len(DATASETS)) + "|",
    ]
    for model, label in MODELS.items():
        records = [done.get((dataset, model)) for dataset in DATASETS]
        params = next((f"{r['parameters']['total'] / 1e6:.2f}M" for r in records if r), "-")
        cells = []
        for dataset, record in zip(DATASETS, records):
            ours = (record["metrics"]["test/mae"], record["metrics"]["test/rmse"]) if record else None
            cells += [_pair(ours), _pair(TABLE3[model].get(dataset))]
        lines.append(f"| {label} | {params} | {TABLE3[model]['params']:.2f}M | " + " | ".join(cells) + " |")
    lines += ["", "## Runs", "", "| run | net | recipe | epochs | steps | train time |", "|---|---|---|---|---|---|"]
    for record in done.values():
        h, training = record["hparams"], record["training"]
        recipe = (
            f"Adam lr {h.get('lr')}, wd {h.get('weight_decay')}, density x{h.get('density_scale')}, "
            f"{'cosine' if h.get('cosine_schedule') else 'constant'} lr, "
            f"{'pretrained ' + str(h['pretrained']) if h.get('pretrained') else 'from scratch'}"
        )
        lines.append(
            f"| {record['run']} | {h.get('net')} {h.get('net_kwargs')} | {recipe} | {training['epochs']} | "
            f"{training['steps']} | {training['fit_seconds']:.0f} s |"
        )
    if missing:
        lines += ["", f"Missing runs (not trained yet): {', '.join(missing)}."]
    lines += ["", "![predictions](predictions.png)", "", "![learning curves](learning_curves.png)"]
    return "\n".join(lines) + "\n"


# --- Fig. 7: which basis scale each pixel uses -------------------------------------------------------


def scale_weights(layer, x: torch.Tensor) -> torch.Tensor:
    """(S, H_out, W_out): each basis scale's share of the per-pixel coefficient energy of ``layer`` on input ``x``.

    alpha's K bases are grouped by scale (smallest first, as ``multiscale_fourier_bessel_bases``
    orders them); a scale's weight is the squared norm of its coefficients over atoms and bases,
    divided by the total at that pixel.
    """
    if layer.bases is None or len(layer.scales) < 2:
        raise ValueError(f"layer has scales {layer.scales}: Fig. 7 needs an ACDA layer with several basis scales")
    alpha = layer.basis_coefficients(x)[0]  # (atoms, K, H, W)
    per_scale = alpha.square().reshape(alpha.shape[0], len(layer.scales), -1, *alpha.shape[-2:]).sum(dim=(0, 2))
    return per_scale / per_scale.sum(dim=0, keepdim=True).clamp_min(1e-12)


@register_figure(
    "scales",
    "per-pixel basis-scale weights of one ACDA layer of a trained crowd model on an image (Fig. 7)",
    ("--ckpt", {"type": Path, "required": True, "dest": "checkpoint", "metavar": "CKPT", "help": "a crowd-counting checkpoint"}),
    ("--image", {"type": Path, "required": True, "dest": "image_path", "metavar": "IMAGE", "help": "the image to analyse"}),
    ("--layer", {"type": int, "dest": "layer_index", "metavar": "N", "help": "which multi-scale ACDA layer (default 0, the first)"}),
)
def scales_figure(out: Path, checkpoint: Path, image_path: Path, layer_index: int | None = None) -> Path:
    """Paper Fig. 7: the image and, per basis scale, its per-pixel weight in one ACDA layer of a trained counting net.

    ``layer_index`` counts the net's ACDA layers with several scales (default: the first, a 7x7 layer).
    """
    from ..data.crowd import WholeImageTransform
    from ..data.images import read_rgb
    from ..nn import ACDAConv2d
    from ..tasks.crowd import CrowdCounting

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train a crowd run first (make train-crowd)")
    model = CrowdCounting.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    layers = [m for m in model.net.modules() if isinstance(m, ACDAConv2d) and m.bases is not None and len(m.scales) > 1]
    if not layers:
        raise ValueError(f"{checkpoint} has no multi-scale ACDA layer (a conv='conv' baseline?); use an ACDA run")
    index = 0 if layer_index is None else layer_index
    if not 0 <= index < len(layers):
        raise ValueError(f"--layer must be in [0, {len(layers)}), got {index}")
    image = np.ascontiguousarray(read_rgb(image_path).transpose(2, 0, 1), np.float32) / 255.0
    height, width = image.shape[1:]
    padded = WholeImageTransform(model.net.size_divisor, 1)({"image": image})["image"]
    captured = {}

    def keep_input(module, inputs) -> None:
        captured["x"] = inputs[0]

    hook = layers[index].register_forward_pre_hook(keep_input)
    with torch.no_grad():
        count = float(model._density(torch.from_numpy(padded)[None]).sum())
        weights = scale_weights(layers[index], captured["x"]).numpy()
    hook.remove()
    import matplotlib.pyplot as plt

    scales = layers[index].scales
    figure, axes = plt.subplots(1, 1 + len(scales), figsize=(3.4 * (1 + len(scales)), 3.2))
    axes[0].imshow(image.transpose(1, 2, 0))
    axes[0].set_title(f"{Path(image_path).name}: count {count:.1f}", fontsize=9)
    padded_extent = (0, padded.shape[2], padded.shape[1], 0)
    for axis, scale, weight in zip(axes[1:], scales, weights):
        shown = axis.imshow(weight, cmap="gray", vmin=0, vmax=1, extent=padded_extent)
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
        axis.set_title(f"{scale}x{scale} bases", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.colorbar(shown, ax=list(axes[1:]), shrink=0.8, label="share of coefficient energy")
    figure.suptitle(f"ACDA layer {index} ({layers[index].kernel_size}x{layers[index].kernel_size}): basis scale per pixel (paper Fig. 7)")
    save_figure(figure, Path(out))
    return Path(out)
