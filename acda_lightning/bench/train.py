"""`acda bench train` and `acda bench table7`: training steps of registered models, Conv vs ACDA (vs DFN)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..models import create_model, list_models, model_builder
from ..nn import ACDAConv2d
from ..nn.baselines import dfn_filter_bytes
from ..paper import TABLE7, TABLE7_BATCH_PER_GPU, TABLE7_SIZE
from .measure import interleaved_times, peak_memory, summary

TABLE7_MODEL = "ad_resnet_s"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """"lenet:conv=acda,kernel_size=5" -> ("lenet", {"conv": "acda", "kernel_size": "5"})."""
    name, _, options = spec.partition(":")
    kwargs = dict(option.split("=", 1) for option in options.split(",") if option)
    for key, value in kwargs.items():
        if value.lstrip("-").isdigit():
            kwargs[key] = int(value)
    return name, kwargs


def default_specs() -> list[str]:
    """Every registered model, as conv and as ACDA where its builder takes ``conv``."""
    specs = []
    for name in list_models():
        if "conv" in inspect.signature(model_builder(name)).parameters:
            specs += [f"{name}:conv=conv", f"{name}:conv=acda"]
        else:
            specs.append(name)
    return specs


def input_channels(model: nn.Module) -> int:
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, ACDAConv2d)))
    return first.in_channels


def train_step(model: nn.Module, x: torch.Tensor):
    """Forward, a model-agnostic loss (mean square of the output), backward and an SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    model.train()

    def run():
        optimizer.zero_grad(set_to_none=True)
        output = model(x)
        output = output if isinstance(output, torch.Tensor) else output[0]
        output.float().square().mean().backward()
        optimizer.step()

    return run


def dfn_predicted_bytes(model: nn.Module, x: torch.Tensor, batch: int, size: int) -> int:
    """DFN's per-pixel filters if every ACDA layer of the model were a DFN layer, at batch x size^2."""
    shapes = []
    hooks = [
        module.register_forward_hook(lambda m, args, out: shapes.append((m, out.shape[-2:])))
        for module in model.modules()
        if isinstance(module, ACDAConv2d)
    ]
    with torch.no_grad():
        model.eval()(x[:1])
    for hook in hooks:
        hook.remove()
    scale = size / x.shape[-1]
    return sum(
        dfn_filter_bytes(batch, m.in_channels, m.out_channels, m.kernel_size, round(h * scale), round(w * scale))
        for m, (h, w) in shapes
    )


def bench_training(specs: list[str], size: int, batch: int, device: torch.device, warmup: int, repeats: int) -> list[dict]:
    models, runs = {}, {}
    for spec in specs:
        name, kwargs = parse_spec(spec)
        model = create_model(name, **kwargs).to(device)
        x = torch.randn(batch, input_channels(model), size, size, device=device)
        models[spec] = (model, x)
        runs[spec] = train_step(model, x)
    times = interleaved_times(runs, device, warmup, repeats)
    rows = []
    for spec, (model, x) in models.items():
        seconds = summary(times[spec])
        rows.append({
            "model": spec,
            "size": size,
            "batch": batch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_step": seconds,
            "images_per_second": batch / seconds["median"],
            "peak_bytes": peak_memory(runs[spec], device),
        })
    return rows


def table7(size: int, batch: int, device: torch.device, warmup: int, repeats: int) -> dict:
    rows = bench_training([f"{TABLE7_MODEL}:conv=conv", f"{TABLE7_MODEL}:conv=acda"], size, batch, device,
                          warmup, repeats)
    acda_model, x = create_model(TABLE7_MODEL, conv="acda"), torch.randn(1, 3, size, size)
    dfn = {
        "predicted_filter_bytes_here": dfn_predicted_bytes(acda_model, x, batch, size),
        "predicted_filter_bytes_paper_setting": dfn_predicted_bytes(acda_model, x, TABLE7_BATCH_PER_GPU, TABLE7_SIZE),
    }
    if device.type == "cuda":
        try:
            torch.empty(dfn["predicted_filter_bytes_paper_setting"], dtype=torch.uint8, device=device)
            dfn["out_of_memory_on_gpu"] = False
        except torch.cuda.OutOfMemoryError:
            dfn["out_of_memory_on_gpu"] = True
    return {"rows": rows, "dfn": dfn, "paper": TABLE7}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | params | images/s | s/step: median [min, max] | peak MB |", "|---|---|---|---|---|"]
    for row in rows:
        s = row["seconds_per_step"]
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['images_per_second']:.1f} | "
            f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}] | {row['peak_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(lines)
