"""`acda bench layer`: every ACDA impl, the baselines and nn.Conv2d, as ratios to nn.Conv2d."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..nn import ACDAConv2d
from ..nn.baselines import BASELINES, dfn_filter_bytes
from ..nn.kernels import device_impls, fused, resolve_impl, triton_acda
from .measure import interleaved_times, peak_memory, ratio_summaries

MODES = ("forward", "forward_backward", "inference")


@dataclass
class LayerSettings:
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 5, 7])
    channels: list[int] = field(default_factory=lambda: [128])
    sizes: list[int] = field(default_factory=lambda: [64])
    batch: int = 2
    warmup: int = 1
    repeats: int = 5
    impls: list[str] | None = None  # None: every impl offered on the device (kernels.device_impls)
    depthwise: bool = False  # groups = channels for nn.Conv2d and ACDA (the baselines have no groups)
    # Every candidate's forward under torch.autocast to this dtype (what --trainer.precision bf16-mixed does).
    autocast: torch.dtype | None = None
    # DFN's per-pixel filters beyond this are reported as out of memory instead of being allocated.
    memory_limit_bytes: int = 8 << 30


def runnable_impls(impls: list[str], device: torch.device | str) -> list[str]:
    """``impls`` less the kernels that cannot run here (no compiler for "fused", no Triton/GPU for "triton")."""
    unavailable = {"fused": not fused.available(), "triton": not triton_acda.available(device)}
    return [impl for impl in impls if not unavailable.get(impl, False)]


def candidates(
    channels: int, kernel_size: int, impls: list[str], device: torch.device | str = "cpu", depthwise: bool = False
) -> dict[str, nn.Module]:
    """nn.Conv2d, ACDA with each impl that can run here (others are left out), and the baselines
    (depthwise: nn.Conv2d and ACDA with groups = channels, no baselines)."""
    padding = kernel_size // 2
    groups = channels if depthwise else 1
    layers: dict[str, nn.Module] = {"conv": nn.Conv2d(channels, channels, kernel_size, padding=padding, groups=groups)}
    for impl in runnable_impls(impls, device):
        layers[f"acda_{impl}"] = ACDAConv2d(channels, channels, kernel_size, impl=impl, groups=groups)
    for name, baseline in {} if depthwise else BASELINES.items():
        layers[name] = baseline(channels, channels, kernel_size, padding=padding)
    return layers


def step(layer: nn.Module, x: torch.Tensor, mode: str, autocast: torch.dtype | None = None):
    """One call of the measured work; returns a closure so timing and memory run the same code. With
    ``autocast`` the forward runs under ``torch.autocast`` to that dtype, the backward outside it."""
    precision = torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None)
    if mode == "inference":
        layer.eval()

        def run():
            with torch.no_grad(), precision:
                layer(x)
    else:
        layer.train()

        def run():
            with precision:
                output = layer(x)
            if mode == "forward_backward":
                output.backward(torch.ones_like(output))
    return run


def bench_layers(settings: LayerSettings, device: torch.device) -> list[dict]:
    rows = []
    impls = device_impls(device) if settings.impls is None else settings.impls
    for channels in settings.channels:
        for size in settings.sizes:
            x = torch.randn(settings.batch, channels, size, size, device=device, requires_grad=True)
            for kernel_size in settings.kernel_sizes:
                layers = candidates(channels, kernel_size, impls, device, settings.depthwise)
                layers = {name: layer.to(device) for name, layer in layers.items()}
                predicted_dfn = dfn_filter_bytes(settings.batch, channels, channels, kernel_size, size, size)
                skipped = {"dfn"} if predicted_dfn > settings.memory_limit_bytes else set()
                auto = resolve_impl("auto", x, kernel_size, size * size)
                for mode in MODES:
                    runs = {name: step(layer, x, mode, settings.autocast) for name, layer in layers.items()
                            if name not in skipped}
                    times = interleaved_times(runs, device, settings.warmup, settings.repeats)
                    ratios = ratio_summaries(times, "conv")
                    memory = {name: peak_memory(run, device) for name, run in runs.items()}
                    for name in layers:
                        row = {
                            "kernel_size": kernel_size,
                            "channels": channels,
                            "size": size,
                            "batch": settings.batch,
                            "groups": channels if settings.depthwise else 1,
                            "mode": mode,
                            "autocast": None if settings.autocast is None else str(settings.autocast),
                            "layer": name,
                            "auto": name == f"acda_{auto}",
                            "parameters": sum(p.numel() for p in layers[name].parameters()),
                        }
                        if name in skipped:
                            row.update(out_of_memory=True, predicted_bytes=predicted_dfn)
                        else:
                            row.update(ratios[name], peak_bytes=memory[name],
                                       memory_ratio=memory[name] / max(memory["conv"], 1))
                        rows.append(row)
                    for layer in layers.values():
                        layer.zero_grad(set_to_none=True)
                    x.grad = None
    return rows


def markdown(rows: list[dict]) -> str:
    lines = []
    autocast = rows[0]["autocast"] if rows else None
    under = f" (autocast {autocast.removeprefix('torch.')}, conv and ACDA alike)" if autocast else ""
    for mode in MODES:
        lines += [
            f"\n### {mode.replace('_', '+')}{under}\n",
            "| k | C | size | layer | time (ms) | time / conv: median [min, max] | peak MB | memory / conv |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in rows if r["mode"] == mode):
            name = row["layer"] + (" (auto)" if row["auto"] else "")
            head = f"| {row['kernel_size']} | {row['channels']} | {row['size']} | {name} "
            if row.get("out_of_memory"):
                lines.append(head + f"| out of memory | - | {row['predicted_bytes'] / 2**20:,.0f} (predicted) | - |")
                continue
            lines.append(
                head + f"| {row['seconds'] * 1e3:.1f} | {row['ratio_median']:.2f} "
                f"[{row['ratio_min']:.2f}, {row['ratio_max']:.2f}] | {row['peak_bytes'] / 2**20:.1f} "
                f"| {row['memory_ratio']:.2f} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path) -> None:
    """Forward+backward time and peak memory vs kernel size, as ratios to nn.Conv2d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    measured = [r for r in rows if r["mode"] == "forward_backward" and not r.get("out_of_memory")]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in dict.fromkeys(r["layer"] for r in measured):
        series = sorted((r["kernel_size"], r["ratio_median"], r["memory_ratio"]) for r in measured if r["layer"] == name)
        kernels = [s[0] for s in series]
        axes[0].plot(kernels, [s[1] for s in series], marker="o", label=name)
        axes[1].plot(kernels, [s[2] for s in series], marker="o", label=name)
    for axis, title in zip(axes, ["time / nn.Conv2d (fwd+bwd)", "peak memory / nn.Conv2d"]):
        axis.set_xlabel("kernel size")
        axis.set_title(title)
        axis.set_yscale("log")
        axis.axhline(1.0, color="gray", linewidth=0.8)
    axes[1].legend(fontsize=7)
    save_figure(figure, path)


@dataclass(frozen=True)
class LayerShape:
    """One ACDA layer of a network as the bench sees it: its geometry and the input it gets."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    input_shape: tuple[int, ...]


def network_layer_shapes(model: nn.Module, x: torch.Tensor) -> list[LayerShape]:
    """Every ACDAConv2d of ``model`` with the input it gets on ``x`` (layers of equal shape listed once)."""
    shapes: dict[tuple, LayerShape] = {}

    def record(name):
        def hook(module, args, output):
            key = (module.in_channels, module.out_channels, module.kernel_size, module.stride, tuple(args[0].shape))
            shapes.setdefault(key, LayerShape(name, *key))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, ACDAConv2d)]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return list(shapes.values())


def resnet18_layer_shapes(size: int, batch: int) -> list[LayerShape]:
    """The 3x3 layers of torchvision's resnet18 converted by ``to_acda``, at size x size, batch ``batch``."""
    from torchvision.models import resnet18

    from ..nn import to_acda

    model = to_acda(resnet18(num_classes=10), kernel_sizes=(3,), impl="basis")
    return network_layer_shapes(model, torch.zeros(batch, 3, size, size))


def bench_network_layers(shapes: list[LayerShape], impls: list[str], device: torch.device, warmup: int,
                         repeats: int, autocast: torch.dtype | None = None) -> list[dict]:
    """Forward+backward of each layer shape: nn.Conv2d, ACDA with each impl, and what "auto" picks."""
    rows = []
    for shape in shapes:
        padding = shape.kernel_size // 2
        geometry = (shape.in_channels, shape.out_channels, shape.kernel_size, shape.stride)
        layers = {"conv": nn.Conv2d(*geometry, padding=padding)}
        layers |= {f"acda_{impl}": ACDAConv2d(*geometry, impl=impl) for impl in impls}
        layers = {name: layer.to(device) for name, layer in layers.items()}
        x = torch.randn(shape.input_shape, device=device, requires_grad=True)
        out_pixels = layers["conv"](x).shape[-2:].numel()
        runs = {name: step(layer, x, "forward_backward", autocast) for name, layer in layers.items()}
        ratios = ratio_summaries(interleaved_times(runs, device, warmup, repeats), "conv")
        rows.append({**shape.__dict__, "input_shape": list(shape.input_shape),
                     "auto": resolve_impl("auto", x, shape.kernel_size, out_pixels), "ratios": ratios})
    return rows


def network_markdown(rows: list[dict], title: str) -> str:
    impls = [name for name in rows[0]["ratios"] if name != "conv"] if rows else []
    lines = [f"\n### {title}: forward+backward per layer, time / nn.Conv2d (median [min, max])\n",
             "| layer | C_in->C_out | stride | input | conv (ms) | " + " | ".join(impls) + " | auto |",
             "|---|---|---|---|---|" + "---|" * len(impls) + "---|"]
    for row in rows:
        cells = [f"{row['ratios'][name]['ratio_median']:.2f} [{row['ratios'][name]['ratio_min']:.2f}, "
                 f"{row['ratios'][name]['ratio_max']:.2f}]" for name in impls]
        lines.append(f"| {row['name']} | {row['in_channels']}->{row['out_channels']} | {row['stride']} | "
                     f"{'x'.join(map(str, row['input_shape']))} | {row['ratios']['conv']['seconds'] * 1e3:.1f} | "
                     + " | ".join(cells) + f" | {row['auto']} |")
    return "\n".join(lines)


RESNET18_SIZE, RESNET18_BATCH = 112, 8
RESNET18_TITLE = "torchvision resnet18, every 3x3 layer via to_acda"


def bench_resnet18(settings: LayerSettings, device: torch.device, quick: bool = False) -> list[dict]:
    """The per-layer table of a converted resnet18 (``--quick``: 32 px, batch 2, plumbing only)."""
    size, batch = (32, 2) if quick else (RESNET18_SIZE, RESNET18_BATCH)
    impls = runnable_impls(device_impls(device) if settings.impls is None else settings.impls, device)
    return bench_network_layers(resnet18_layer_shapes(size, batch), impls, device, settings.warmup, settings.repeats,
                                settings.autocast)
