"""The ``acda`` command: Lightning's fit/validate/test/predict on a YAML config, plus the project's tools.

    acda fit -c tasks/toy/acda.yaml [--trainer.max_epochs 5 ...]
    acda data synth toy --out DIR
    acda report [--root reports]
    acda figures bases [--out reports/figures/bases.png]
    acda models [PATTERN]
    acda bench layer|table6|table7|train [--device cpu|cuda] [--format md|json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ACDACLI(LightningCLI):
    """LightningCLI in subclass mode: the config names the LightningModule and the DataModule.

    Adds ``report`` (a ReportWriter: ``--report.name``, ``--report.root``) and, for ``fit``,
    ``--test_after_fit`` (default true): test the best checkpoint, or the final weights when
    no checkpoint is monitored, right after training, as lightning-hydra-template's train.py does.
    """

    def add_arguments_to_parser(self, parser) -> None:
        from .callbacks import ReportWriter

        parser.add_lightning_class_args(ReportWriter, "report")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="run `test` when `fit` ends")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.trainer.default_root_dir is None:  # logs, checkpoints and the resolved config
            config.trainer.default_root_dir = f"runs/{config.report.name}"

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None and checkpoint.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def run_lightning(args: list[str]) -> None:
    from .utils.checkpoint import AtomicCheckpointIO

    ACDACLI(
        model_class=None,
        datamodule_class=None,
        args=args,
        trainer_defaults={"plugins": [AtomicCheckpointIO()]},
        save_config_kwargs={"overwrite": True},
    )


def _tools_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acda",
        description="ACDA experiment suite. Training: `acda {fit,validate,test,predict} -c CONFIG.yaml` "
        "(Lightning CLI; `acda fit --help`). Tools below.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in LIGHTNING_SUBCOMMANDS:
        commands.add_parser(name, help=f"Lightning `{name}` on a YAML config (see `acda {name} --help`)")

    from .data.synth import SYNTHESIZERS

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="write a small synthetic dataset in the official layout")
    synth.add_argument("task", choices=SYNTHESIZERS.names(), help="which task's data to write")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--seed", type=int, default=0)

    report = commands.add_parser("report", help="build the study reports (reports/<study>/) from finished runs")
    report.add_argument("--root", type=Path, default=Path("reports"), help="folder holding the runs' reports")

    figures = commands.add_parser("figures", help="draw a figure of the paper")
    figures.add_argument("figure", choices=["bases"], help="bases: the multi-scale Fourier-Bessel bases (Fig. B)")
    figures.add_argument("--out", type=Path, default=Path("reports/figures/bases.png"))
    figures.add_argument("--kernel-size", type=int, default=7)
    figures.add_argument("--bases-per-scale", type=int, default=6)

    models = commands.add_parser("models", help="list registered models with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*")

    from .bench import add_arguments

    add_arguments(commands.add_parser("bench", help="time/memory/FLOPs of ACDA vs conv (paper Tables 6-7)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        run_lightning(argv)
        return 0
    args = _tools_parser().parse_args(argv)
    if args.command == "data":
        from .data.synth import synthesize

        for path in synthesize(args.task, args.out, seed=args.seed):
            print(path)
    elif args.command == "report":
        from .studies import build_reports

        for line in build_reports(args.root):
            print(line)
    elif args.command == "figures":
        from .callbacks.figures import bases_figure

        bases_figure(args.kernel_size, args.bases_per_scale, args.out)
        print(args.out)
    elif args.command == "models":
        from .models import create_model, list_models

        for name in list_models(args.pattern):
            model = create_model(name)
            print(f"{name:24s} {sum(p.numel() for p in model.parameters()):>12,d} parameters")
    elif args.command == "bench":
        from .bench import run

        print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
