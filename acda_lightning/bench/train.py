"""`acda bench train` and `acda bench table7`: training steps of registered models, Conv vs ACDA (vs DFN)."""

from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

from ..models import create_model, list_models
from ..nn import ACDAConv2d
from ..nn.baselines import dfn_filter_bytes
from ..paper import TABLE7, TABLE7_BATCH_PER_GPU, TABLE7_SIZE
from .measure import counting_page_faults, interleaved_times, peak_memory, summary

TABLE7_MODEL = "ad_resnet_s"


def parse_spec(spec: str) -> tuple[str, dict[str, str | int]]:
    """"lenet:conv=acda,kernel_size=5" -> ("lenet", {"conv": "acda", "kernel_size": 5})."""
    name, _, options = spec.partition(":")
    kwargs = {}
    for option in filter(None, options.split(",")):
        key, equals, value = option.partition("=")
        if not (key and equals):
            raise ValueError(f"--models {spec!r}: options are key=value, got {option!r} (e.g. lenet:conv=acda)")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, kwargs


# The steps `acda bench train` times by default: each network as conv and as ACDA, at the input size
# and batch of its use (resnet18 is torchvision's, every 3x3 swapped by to_acda(kernel_sizes=(3,))).
NETWORK_STEPS = (
    (112, 8, ("resnet18:conv=conv", "resnet18:conv=acda")),
    (160, 4, ("ad_resnet_s:conv=conv", "ad_resnet_s:conv=acda")),
    (32, 128, ("lenet:conv=conv", "lenet:conv=acda")),
)


def build(name: str, **kwargs) -> nn.Module:
    """A registered model, or torchvision's resnet18 (10 classes): conv="conv" as it is, conv="acda" converted by
    to_acda (every 3x3; the other options go to each ACDAConv2d, e.g. gen_hidden=32)."""
    if name != "resnet18":
        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; available: resnet18 (torchvision's), {', '.join(list_models())}")
        return create_model(name, **kwargs)
    from torchvision.models import resnet18

    from ..nn import to_acda

    conv = kwargs.pop("conv", "conv")
    if conv not in ("conv", "acda"):
        raise ValueError(f"resnet18 takes conv=conv or conv=acda, got conv={conv!r}")
    if conv == "conv" and kwargs:
        raise ValueError(f"resnet18:conv=conv takes no other options (they set ACDA layers), got {sorted(kwargs)}")
    model = resnet18(num_classes=10)
    return to_acda(model, kernel_sizes=(3,), **kwargs) if conv == "acda" else model


def bench_network_steps(device: torch.device, warmup: int, repeats: int, quick: bool = False,
                        fixed_generator: bool = False) -> list[dict]:
    """NETWORK_STEPS, each pair interleaved in one process, with the ACDA step's ratio to its conv twin."""
    rows = []
    for size, batch, specs in NETWORK_STEPS:
        size, batch = (min(size, 64), 2) if quick else (size, batch)
        rows += bench_training(list(specs), size, batch, device, warmup, repeats, fixed_generator)
    return rows


def add_ratios_to_conv_twins(rows: list[dict]) -> None:
    """Each row whose spec sets conv to something other than "conv" gets ``ratio_to_conv``: its steps over those
    of the first spec of the same model with conv=conv, repeat by repeat (the two ran interleaved)."""
    parsed = [(row, *parse_spec(row["model"])) for row in rows]
    twins = {}
    for row, name, kwargs in parsed:
        if kwargs.get("conv") == "conv":
            twins.setdefault(name, row)
    for row, name, kwargs in parsed:
        if kwargs.get("conv", "conv") != "conv" and name in twins:
            steps = zip(row["step_seconds"], twins[name]["step_seconds"])
            row["ratio_to_conv"] = summary([step / twin_step for step, twin_step in steps])


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


FIXED_GENERATOR = " (generator fixed)"


def with_fixed_generators(model: nn.Module) -> nn.Module:
    """A copy of model whose ACDA layers skip their generator: each returns the alpha it predicted at its first
    call (per input shape) as a fixed tensor that still takes a gradient, so the kernel's forward and backward
    run whole and only the generator's own work is gone. Timed beside the model, it says what the generator
    costs of a step (and so what a cheaper one could save at most)."""
    fixed = copy.deepcopy(model)
    for layer in fixed.modules():
        if isinstance(layer, ACDAConv2d):
            layer.basis_coefficients = first_prediction(layer.basis_coefficients)
    return fixed


def first_prediction(predict):
    """predict (an ACDA layer's basis_coefficients) run once per input shape; later calls get that alpha."""
    predictions = {}

    def fixed(x: torch.Tensor) -> torch.Tensor:
        if x.shape not in predictions:
            with torch.no_grad():
                alpha = predict(x).requires_grad_()
            # dL/dalpha is computed (the kernel's backward stays whole), then dropped rather than summed up
            alpha.register_post_accumulate_grad_hook(lambda leaf: setattr(leaf, "grad", None))
            predictions[x.shape] = alpha
        return predictions[x.shape]

    return fixed


def bench_training(specs: list[str], size: int, batch: int, device: torch.device, warmup: int, repeats: int,
                   fixed_generator: bool = False) -> list[dict]:
    """Each spec's SGD step, interleaved in one process. fixed_generator: each model with ACDA layers is also
    timed as ``with_fixed_generators`` makes it, in a row labelled SPEC + FIXED_GENERATOR."""
    models, runs, page_faults = {}, {}, {}
    for spec in specs:
        name, kwargs = parse_spec(spec)
        try:
            model = build(name, **kwargs).to(device)
        except TypeError as error:  # an option the model (or its ACDA layers) does not take
            raise ValueError(f"--models {spec!r}: {error}") from None
        x = torch.randn(batch, input_channels(model), size, size, device=device)
        variants = {spec: model}
        if fixed_generator and any(isinstance(module, ACDAConv2d) for module in model.modules()):
            variants[spec + FIXED_GENERATOR] = with_fixed_generators(model)
        for label, variant in variants.items():
            models[label] = (spec, variant)
            runs[label] = train_step(variant, x)
            page_faults[label] = []
    if device.type == "cpu":
        runs_counted = {label: counting_page_faults(run, page_faults[label]) for label, run in runs.items()}
    else:
        runs_counted = runs
    times = interleaved_times(runs_counted, device, warmup, repeats)
    rows = []
    for label, (spec, model) in models.items():
        seconds = summary(times[label])
        faults = page_faults[label][-repeats:]  # the timed steps, not the warm-up
        rows.append({
            "model": spec,
            "label": label,
            "generator_fixed": label != spec,
            "size": size,
            "batch": batch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_step": seconds,
            "step_seconds": times[label],
            "images_per_second": batch / seconds["median"],
            "peak_bytes": peak_memory(runs[label], device),
            "page_faults_per_step": statistics.median(faults) if faults else None,
        })
    add_ratios_to_conv_twins(rows)
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
    lines = ["| model | input | params | images/s | s/step: median [min, max] | step / conv twin's | peak MB "
             "| page faults/step |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s = row["seconds_per_step"]
        ratio = row.get("ratio_to_conv")
        ratio_text = f"{ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]" if ratio else "-"
        faults = row.get("page_faults_per_step")
        lines.append(
            f"| {row['label']} | {row['batch']}x{row['size']}px | {row['parameters']:,} | "
            f"{row['images_per_second']:.1f} | {s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}] | {ratio_text} | "
            f"{row['peak_bytes'] / 2**20:.1f} | {'-' if faults is None else f'{faults:,.0f}'} |"
        )
    return "\n".join(lines)
