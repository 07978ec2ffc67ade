"""`acda bench layer|table6|table7|train|roofline`: the paper's efficiency claims (Sec. 4.4, Tables 6-7), measured.

``roofline`` alone measures nothing: it predicts each kernel's time at an H100's published peaks from
counted multiply-adds and bytes (bench/roofline.py).

Times are interleaved in one process (every repeat runs every candidate once), reported as
ratios to nn.Conv2d (or per step) with median and min/max over repeats; peak memory is the
largest allocation total during one call (CUDA allocator stats, or the profiler's CPU events).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

VIEWS = ("layer", "table6", "table7", "train", "roofline")
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_model(), "isa": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def layer_settings(args):
    from . import layer

    settings = layer.LayerSettings(batch=args.batch or 2, repeats=args.repeats, warmup=args.warmup)
    if args.groups == "depthwise":  # the ConvNeXt-style layer: 7x7, 256 channels, 56x56
        settings = layer.LayerSettings(kernel_sizes=[7], channels=[256], sizes=[56], batch=settings.batch,
                                       warmup=settings.warmup, repeats=settings.repeats)  # fmt: skip
    if args.quick:
        settings = layer.LayerSettings(kernel_sizes=[3], channels=[4], sizes=[8], batch=1, warmup=0, repeats=1)
    settings.depthwise = args.groups == "depthwise"
    settings.autocast = AUTOCAST_DTYPES[args.autocast]
    for key in ("kernel_sizes", "channels", "sizes", "impls"):
        if getattr(args, key):
            setattr(settings, key, getattr(args, key))
    return settings


def run(args) -> str:
    """The text `acda bench` prints: one JSON document (--format json) or Markdown."""
    from . import layer, roofline, table6, train  # imported here so that building the CLI parser stays light

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this machine has no CUDA device torch can use; run with --device cpu")
    for kernel_size in args.kernel_sizes or ():
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"--kernel-sizes {kernel_size}: the benchmarks time the default layer, whose "
                             "Fourier-Bessel bases need an odd kernel size >= 3")
    if args.fixed_generator and args.view != "train":
        raise ValueError(f"--fixed-generator times training steps: it belongs to the train view, not {args.view}")
    result: dict = {"view": args.view, "machine": machine(device)}
    text = []
    if args.view == "table6":
        result.update(table6.table6())
        text.append(table6.markdown(result))
    elif args.view == "roofline":
        result.update(roofline.roofline(args.kernel_sizes or (3, 5, 7), [args.batch] if args.batch else (1, 8, 32)))
        text.append(roofline.markdown(result))
    elif args.view in ("table7", "train"):
        size = args.sizes[0] if args.sizes else (64 if args.quick else 224)  # BatchNorm needs >1 value at stride 32
        batch = args.batch or 2
        repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
        if args.view == "train":
            if args.models:
                rows = train.bench_training(args.models, size, batch, device, warmup, repeats, args.fixed_generator)
            else:
                rows = train.bench_network_steps(device, warmup, repeats, args.quick, args.fixed_generator)
            result["rows"] = rows
            text.append(train.markdown(rows))
        else:
            result.update(train.table7(size, batch, device, warmup, repeats))
            text += [train.markdown(result["rows"]), f"DFN: {result['dfn']}"]
    if args.view == "layer":
        settings = layer_settings(args)
        rows = layer.bench_layers(settings, device)
        result["layer_rows"] = rows
        text.append(layer.markdown(rows))
        if not settings.depthwise:
            result["resnet18_rows"] = layer.bench_resnet18(settings, device, quick=args.quick)
            under = f" (autocast {args.autocast})" if settings.autocast else ""
            text.append(layer.network_markdown(result["resnet18_rows"], layer.RESNET18_TITLE + under))
        if args.plot:
            layer.plot(rows, Path(args.plot))
            result["plot"] = str(args.plot)
    if args.format == "json":
        return json.dumps(result, indent=1, default=str)
    return "\n\n".join([f"Machine: {result['machine']}", *text])


def at_least(minimum: int):
    """An argparse type: an int >= minimum (argparse names the option in its error)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse's "invalid int value" message for text that is not a number
    return parse


def add_arguments(parser) -> None:
    positive = at_least(1)
    parser.add_argument("view", choices=VIEWS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--format", default="md", choices=["md", "json"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the plumbing only")
    parser.add_argument("--kernel-sizes", dest="kernel_sizes", type=positive, nargs="+")
    parser.add_argument("--channels", type=positive, nargs="+")
    parser.add_argument("--sizes", type=positive, nargs="+", help="input height = width")
    parser.add_argument("--batch", type=positive)
    parser.add_argument("--impls", nargs="+", help="ACDA impls to include (layer view)")
    parser.add_argument("--groups", choices=["dense", "depthwise"], default="dense",
                        help="layer view: depthwise = nn.Conv2d(groups=C) vs depthwise ACDA (default 7x7, 256 ch, 56x56)")
    parser.add_argument("--models", nargs="+", help="train view: NAME[:key=value,...], e.g. lenet:conv=acda or resnet18:conv=acda,gen_hidden=32")
    parser.add_argument("--fixed-generator", dest="fixed_generator", action="store_true",
                        help="train view: also time each ACDA net with every generator's output held fixed "
                             "(what the generator costs of a step)")
    parser.add_argument("--repeats", type=positive, default=5)
    parser.add_argument("--warmup", type=at_least(0), default=1)
    parser.add_argument("--plot", help="layer view: write a PNG of time and memory vs kernel size here")
    parser.add_argument("--autocast", choices=list(AUTOCAST_DTYPES), default="none",
                        help="layer view: every forward under torch.autocast (bf16: as --trainer.precision bf16-mixed)")
