"""The ``acda`` command: Lightning's fit/validate/test/predict on a YAML config, plus the project's tools.

    acda fit -c tasks/toy/acda.yaml [--trainer.max_epochs 5 ...]
    acda data synth toy --out DIR
    acda report [--root reports]
    acda figures bases [--out reports/figures/bases.png]
    acda models [PATTERN]
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
    figures.add_argument(
        "figure",
        choices=["bases", "scales"],
        help="bases: the multi-scale Fourier-Bessel bases (Fig. B); scales: per-pixel basis scale "
        "weights of one ACDA layer of a trained crowd model on an image (Fig. 7; needs --ckpt, --image)",
    )
    figures.add_argument("--out", type=Path, help="PNG to write (default reports/figures/<figure>.png)")
    figures.add_argument("--kernel-size", type=int, default=7)
    figures.add_argument("--bases-per-scale", type=int, default=6)
    figures.add_argument("--ckpt", type=Path, help="scales: a crowd-counting checkpoint")
    figures.add_argument("--image", type=Path, help="scales: the image to analyse")
    figures.add_argument("--layer", type=int, help="scales: which multi-scale ACDA layer (default 0, the first)")

    models = commands.add_parser("models", help="list registered models with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*")
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
        out = args.out or Path(f"reports/figures/{args.figure}.png")
        if args.figure == "scales":
            from .studies.crowd import scales_figure

            if args.ckpt is None or args.image is None:
                raise SystemExit("acda figures scales needs --ckpt CROWD_CHECKPOINT and --image IMAGE")
            scales_figure(args.ckpt, args.image, out, args.layer)
        else:
            from .callbacks.figures import bases_figure

            bases_figure(args.kernel_size, args.bases_per_scale, out)
        print(out)
    elif args.command == "models":
        from .models import create_model, list_models

        print(f"{'model':16s} {'conv':5s} {'parameters':>12s}  paper (ours vs paper)")
        for name in list_models(args.pattern):
            for conv in ("acda", "conv"):  # every registered model takes conv="acda"|"conv" (DESIGN.md Sec. 4)
                model = create_model(name, conv=conv)
                count = sum(p.numel() for p in model.parameters())
                paper = ", ".join(
                    f"{value / 1e6:.2f}M {source} ({100 * (count / value - 1):+.1f}%)"
                    for source, value in getattr(model, "paper_parameters", {}).items()
                )
                print(f"{name:16s} {conv:5s} {count:>12,d}  {paper or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
