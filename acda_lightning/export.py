"""``acda export``: a trained task's network as an ONNX model or a ``torch.export`` program.

The network is the config's LightningModule (its ``forward``: input images to the task's output)
with the checkpoint's weights, in eval mode, with batch, height and width dynamic. ACDA layers
export through their "basis" formulation (a fixed depthwise conv with the bases, an einsum with
the per-pixel coefficients, A as a 1x1 conv: all plain ONNX operators), whatever ``impl`` trained
them, so the file needs no custom op to run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .nn import ACDAConv2d
from .utils import atomic_path

FORMATS = {"onnx": ".onnx", "exported": ".pt2"}
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "output"
EXAMPLE_SIZE = 64  # the traced example's height and width (rounded up to the net's size_divisor)

DESCRIPTION = """Export the network of a trained task (the config's model with the checkpoint's weights, eval mode).

  --format onnx       ONNX (opset 17), input "images" (batch, channels, height, width) float32, output "output";
                      batch, height and width are dynamic. ACDA layers become plain ONNX operators (no custom op),
                      whatever implementation trained them. Run it with onnxruntime:
                        import onnxruntime as ort
                        session = ort.InferenceSession("net.onnx", providers=["CPUExecutionProvider"])
                        (output,) = session.run(None, {"images": images})   # images: float32 NCHW numpy array
  --format exported   a torch.export program (.pt2) with the same dynamic dimensions; run it with
                        program = torch.export.load("net.pt2"); output = program.module()(images)

The file is written to a temporary name in the output folder and renamed when complete. Options after the
known ones (e.g. --model.init_args.net_kwargs '{...}') override the config as in `acda fit`; pass the same
ones the checkpoint was trained with.
example: acda export -c tasks/toy/acda.yaml --ckpt_path runs/toy_acda/<run_id>/checkpoints/last.ckpt \\
             --format onnx --out toy_acda.onnx"""


def add_parser(commands) -> None:
    """Register ``acda export`` on the tools parser's subcommands."""
    parser = commands.add_parser(
        "export",
        help="export a trained network to ONNX or a torch.export program",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", action="append", required=True, help="the experiment config (repeatable)")
    parser.add_argument("--ckpt_path", required=True, type=Path, help="the checkpoint whose weights to export")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="onnx (default) or exported")
    parser.add_argument("--out", required=True, type=Path, help=f"the file to write ({', '.join(FORMATS.values())})")


def config_model(configs: list[str], overrides: list[str]) -> nn.Module:
    """The LightningModule the configs (and the `--model...` overrides) build, untrained, nothing else run."""
    from lightning.pytorch.cli import LightningCLI

    from .cli import ACDACLI

    class ModelOnly(ACDACLI):
        """ACDACLI's parser (so configs with its `report:` section parse), without a subcommand or a run."""

        def parse_arguments(self, parser, args) -> None:
            LightningCLI.parse_arguments(self, parser, args)

        def _parse_ckpt_path(self) -> None:
            pass

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            config = self.config.clone()
            config.data = None  # a datamodule may check its data folder; exporting needs no data
            self.model = self.parser.instantiate_classes(config).model

        def after_instantiate_classes(self) -> None:
            pass

    args = [arg for config in configs for arg in ("-c", config)] + overrides
    return ModelOnly(model_class=None, datamodule_class=None, args=args, run=False).model


def load_weights(module: nn.Module, checkpoint_path: Path, configs: list[str]) -> None:
    from .runs import RunError, check_checkpoint_fits, read_checkpoint

    checkpoint = read_checkpoint(checkpoint_path)
    try:
        check_checkpoint_fits(checkpoint, checkpoint_path, module)
    except RunError as error:
        raise RunError(f"{error} (config: {', '.join(configs)})") from None
    module.load_state_dict(checkpoint["state_dict"])


@contextlib.contextmanager
def export_formulation(module: nn.Module) -> Iterator[None]:
    """Every ACDA layer of ``module`` on its pure-PyTorch "basis" implementation while exporting."""
    layers = [m for m in module.modules() if isinstance(m, ACDAConv2d)]
    impls = [layer.impl for layer in layers]
    for layer in layers:
        layer.impl = "basis"
    try:
        yield
    finally:
        for layer, impl in zip(layers, impls):
            layer.impl = impl


def example_input(module: nn.Module) -> torch.Tensor:
    """A (2, C, S, S) input: C the first conv's input channels, S a multiple of the net's size_divisor."""
    first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, ACDAConv2d))), None)
    if first is None:
        raise ValueError(f"{type(module).__name__} has no convolution to read its input channels from")
    net = getattr(module, "net", module)
    divisor = getattr(net, "size_divisor", 1)
    size = -(-EXAMPLE_SIZE // divisor) * divisor
    parameter = next(module.parameters())
    return torch.randn(2, first.in_channels, size, size, dtype=parameter.dtype, device=parameter.device)


def _write_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # the tracer warns about every Python int it reads off a shape; the sizes stay symbolic (tested)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
        )


def _write_exported(module: nn.Module, x: torch.Tensor, path: Path) -> None:
    dynamic = torch.export.Dim.DYNAMIC
    program = torch.export.export(module, (x,), dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    torch.export.save(program, str(path))


def _writable_folder(out: Path) -> None:
    from .runs import RunError

    folder = out.parent
    if not folder.is_dir():
        raise RunError(f"cannot write {out}: folder {folder} does not exist; create it or pass another --out")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunError(f"cannot write {out}: folder {folder} is not writable; pass another --out")


def export(args: argparse.Namespace, overrides: list[str]) -> str:
    """Write ``args.out``; returns what was written and how to load it."""
    out = Path(args.out)
    _writable_folder(out)  # before the (slow) model build and export
    module = config_model(args.config, overrides)
    load_weights(module, Path(args.ckpt_path), args.config)
    module.eval()
    x = example_input(module)
    writer = _write_onnx if args.format == "onnx" else _write_exported
    with atomic_path(out) as temporary, torch.no_grad(), export_formulation(module):
        writer(module, x, temporary)
    return f"{out} ({args.format}: {type(module).__name__} of {', '.join(args.config)}; batch, height, width dynamic)"
