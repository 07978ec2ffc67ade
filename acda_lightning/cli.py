"""The ``acda`` command: Lightning's fit/validate/test/predict on a YAML config, plus the project's tools.

    acda fit -c tasks/toy/acda.yaml [--trainer.max_epochs 5 ...] [--ckpt_path last]
    acda test|validate -c CONFIG --ckpt_path CKPT;  acda predict -c CONFIG --ckpt_path CKPT [--predict_dir OUT]
    acda data synth <task> --out DIR
    acda report [--root reports]
    acda figures bases [--out reports/figures/bases.png]
    acda models [PATTERN]
    acda bench layer|table6|table7|train [--device cpu|cuda] [--format md|json]
    acda export -c CONFIG --ckpt_path CKPT --format onnx|exported --out FILE
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # about Lightning's own calls into jsonargparse

from lightning.pytorch.cli import LightningCLI  # noqa: E402

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# Warnings Lightning raises that a user of this CLI cannot act on (each explained where it is silenced).
QUIET_WARNINGS = (
    "LightningCLI's args parameter",  # main(argv) is how this CLI (and its tests) calls LightningCLI
    "Experiment logs directory",  # a resumed run appends to its own TensorBoard folder on purpose
    ".*does not have many workers",  # the datamodules choose num_workers; configs set it per dataset
    ".*GPU available but not used",  # configs that pin accelerator: cpu (the toy study) say so themselves
    "The number of training batches .* is smaller than the logging interval",  # tiny synthetic sets
    ".*Checkpoint directory .* exists and is not empty",  # resuming writes into its own run folder
    "`isinstance\\(treespec, LeafSpec\\)` is deprecated",  # inside Lightning itself
)


class _DropAdvertisement(logging.Filter):
    """Lightning prints a cloud-logging advertisement on every run; it is not about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud logging" not in record.getMessage()

SHORT_HELP = """usage: acda {sub} -c CONFIG.yaml [--section.key VALUE ...]

Runs Lightning `{sub}` on one experiment config (tasks/<task>/<name>.yaml). Common options:
  -c, --config FILE             the experiment (repeatable; later files override earlier ones)
  --ckpt_path PATH|last|auto    fit: resume an unfinished run (`last`: the newest unfinished run of this
                                config, an error when there is none; `auto`: resume if possible, else start
                                fresh; a finished run is never resumed); test/validate/predict: the weights
                                to use (predict refuses to run without them unless
                                --allow_untrained)
  --trainer.max_epochs N, --trainer.max_steps N, --trainer.devices N, --trainer.strategy ddp,
  --trainer.accelerator cpu|gpu, --trainer.precision bf16-mixed, --trainer.fast_dev_run true
  --data.root DIR, --data.batch_size N, --data.num_workers N
  --model.init_args.KEY VALUE   any argument of the config's LightningModule (see --print_config)
  --report.name NAME            run name: reports/NAME/ and runs/NAME/<run_id>/
  --report.root DIR             where reports go (default reports/); --trainer.default_root_dir moves runs/
  --test_after_fit true|false   fit: test the best (or final) weights when training ends (default true)
  --data.predict_root DIR       predict: a folder of images (default: the dataset's test split)
  --predict_dir DIR             predict: where outputs go (default runs/<report.name>/<run_id>/predictions/)
  --allow_untrained true        predict: run without --ckpt_path, on untrained weights; the outputs go to
                                .../predictions_untrained/ beside an UNTRAINED.txt and the summary says so
  --last_checkpoint_every_n_steps N  fit: also write last.ckpt every N steps, not only at epoch ends
  own_budget: true              (in a later -c file) its trainer budget is the experiment's own: a complete
                                run, not a shortened one (by default a later -c that lowers it shortens)
  --seed_everything N           the seed (configs set one)
  --print_config                print the resolved config and exit
  --help-all                    every option Lightning accepts
"""


class ACDACLI(LightningCLI):
    """LightningCLI in subclass mode (the config names the LightningModule and the DataModule) that
    gives every run an identity (``acda_lightning.runs``): its own folders, resumable checkpoints,
    TensorBoard and CSV logs, and a report marked when the run was shortened on purpose."""

    def add_arguments_to_parser(self, parser) -> None:
        from .callbacks import ReportWriter

        parser.add_lightning_class_args(ReportWriter, "report")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="run `test` when `fit` ends")
        parser.add_argument(
            "--last_checkpoint_every_n_steps", type=int, default=1000,
            help="fit: write last.ckpt every N training steps as well as at every epoch end (0: epoch ends only)",
        )  # fmt: skip
        parser.add_argument(
            "--own_budget", type=bool, default=False,
            help="set in a -c file after the experiment's: its trainer budget is the experiment's own (a complete run)",
        )  # fmt: skip
        parser.add_argument(
            "--predict_dir", type=Optional[str], default=None,
            help="predict: output folder (default runs/<report.name>/<run_id>/predictions)",
        )
        parser.add_argument(
            "--allow_untrained", type=bool, default=False,
            help="predict: run without --ckpt_path on untrained weights (outputs marked UNTRAINED)",
        )

    def parse_arguments(self, parser, args) -> None:
        from .runs import RunError

        super().parse_arguments(parser, args)
        # What a complete run is: the experiment's own YAML (the first -c) and any later -c file that
        # declares `own_budget: true`; other files and command-line overrides that lower its budget shorten it.
        subcommand = self.config.subcommand
        config_files = _config_file_args(args)
        own_files = config_files[:1] + [path for path in config_files[1:] if _declares_own_budget(path)]
        if self.config[subcommand].own_budget and len(own_files) < 2:
            raise RunError("own_budget: true belongs in a -c budget file after the experiment's config, not on the command line")
        own_args = [arg for path in own_files for arg in ("-c", path)]
        own = parser.parse_args([subcommand, *own_args]) if own_files else self.config
        self.config_trainer = dict(own[subcommand].trainer)

    def _parse_ckpt_path(self) -> None:
        """Resolve ``last``/``auto``, read the checkpoint once (a corrupt file is one clear error) and pick
        the run id: a resumed fit continues its run (never a finished one); anything else starts a new one.
        Unlike Lightning's own hook this does not overwrite the config's model with the checkpoint's
        hyperparameters: the config decides the model, and the checkpoint must fit it (checked once the
        model exists)."""
        from .runs import (
            RUN_ID_ENV, RunError, check_resumable, last_checkpoint, new_run_id, read_checkpoint, run_id_of_checkpoint,
        )  # fmt: skip

        subcommand = self.config.subcommand
        config = self.config[subcommand]
        self.runs_root = Path(config.trainer.default_root_dir or "runs")
        self.runs_dir = self.runs_root / config.report.name
        requested = config.get("ckpt_path")
        path = None
        if requested in ("last", "auto"):
            launched_rank = os.environ.get(RUN_ID_ENV)  # a DDP rank joins the run its launcher resumed
            path, finished = last_checkpoint(self.runs_dir, launched_rank)
            if path is None and requested == "last":
                found = f"every run has finished (newest: {finished[0]})" if finished else "no */checkpoints/last.ckpt"
                raise RunError(
                    f"--ckpt_path last: no unfinished run of {config.report.name} to resume under {self.runs_dir}/ "
                    f"({found}); drop --ckpt_path to start a new run, or use --ckpt_path auto"
                )
            if path is not None and not launched_rank:
                passed = f" (newer finished runs left alone: {', '.join(finished)})" if finished else ""
                print(f"resuming run {config.report.name}/{path.parent.parent.name} from {path}{passed}")
        elif requested:
            path = Path(requested)
        self.checkpoint_path = path
        self.checkpoint = read_checkpoint(path) if path else None
        if subcommand == "fit" and self.checkpoint is not None:
            check_resumable(self.checkpoint, path)
        config.ckpt_path = str(path) if path else None
        resumed = run_id_of_checkpoint(path, self.runs_dir) if path is not None and subcommand == "fit" else None
        self.resumed = resumed is not None
        self.run_id = resumed or new_run_id()

    def before_instantiate_classes(self) -> None:
        from .runs import RUN_ID_ENV, check_writable, config_sha256, experiment_config, shortened_reasons

        config = self.config[self.subcommand]
        if self.subcommand == "predict":
            _check_predict_weights(config)
        self.run_dir = self.runs_dir / self.run_id
        outputs = {"the runs folder (--trainer.default_root_dir)": self.runs_root}
        if self.subcommand == "test" or (self.subcommand == "fit" and config.test_after_fit):
            outputs["--report.root"] = Path(config.report.root)
        check_writable(outputs)  # before anything is trained or written
        os.environ[RUN_ID_ENV] = self.run_id  # the DDP ranks Lightning launches join this run
        self.shortened = shortened_reasons(dict(config.trainer), self.config_trainer, self.subcommand, config.ckpt_path)
        resolved = self._resolved_config()
        self.fit_identity = {
            "run_id": self.run_id,
            "config_sha256": config_sha256(resolved),
            "config": experiment_config(resolved),
            "shortened": self.shortened,
        }

    def after_instantiate_classes(self) -> None:
        from .runs import FIT_RECORD, RunError, check_checkpoint_fits, tested_weights_reasons

        config = self.config[self.subcommand]
        shortened, trained = list(self.shortened), None
        if self.checkpoint is not None:
            check_checkpoint_fits(self.checkpoint, self.checkpoint_path, self.model)
            if self.subcommand != "fit":  # where the weights under test come from, and how long they trained
                record = self.checkpoint.get(FIT_RECORD)
                shortened += tested_weights_reasons(record, self._resolved_config())
                trained = {
                    "epochs": self.checkpoint.get("epoch", 0),
                    "steps": self.checkpoint.get("global_step", 0),
                    "stopping": (record or {}).get("stopping") or "unknown (the fit had not finished)",
                    "selection": (record or {}).get("selection") or "unknown (no record of a finished fit)",
                }
            self.checkpoint = None  # the trainer reads it again; keep one copy in memory
        if self.subcommand == "predict" and not hasattr(self.model, "write_predictions"):
            raise RunError(f"{type(self.model).__name__} does not write predictions; `acda predict` supports the tasks that do")
        tested = f"checkpoint {config.ckpt_path}" if config.ckpt_path and self.subcommand != "fit" else "final weights"
        # The trainer has the path (config_init); the config.yaml saved in the run folder must not resume
        # or name it, so that `acda fit -c runs/<name>/<id>/config.yaml` starts a new run.
        config.ckpt_path = None
        self.report.bind_run(self.run_id, shortened, self._resolved_config(), tested, trained)

    @property
    def report(self):
        return self._get(self.config_init, "report")

    def _resolved_config(self) -> dict:
        import yaml

        return yaml.safe_load(self._parser(self.subcommand).dump(self.config[self.subcommand]))

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.plugins.io import CheckpointIO

        from .utils.checkpoint import AtomicCheckpointIO

        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        # The run's own folder, given to the Trainer only: the saved config.yaml keeps the runs root, so
        # `acda fit -c runs/<name>/<id>/config.yaml` starts a new run beside it.
        trainer_config["default_root_dir"] = str(self.run_dir)
        if self.subcommand != "fit":
            trainer_config["enable_checkpointing"] = False  # nothing to save; restoring one warns about its folder
        callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        callbacks += self._run_callbacks(trainer_config)
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())  # added here, not as a config default: it is not a setting
        trainer_config["plugins"] = plugins
        if trainer_config.get("logger") in (None, True):
            trainer_config["logger"] = self._loggers()
        return self._instantiate_trainer(trainer_config, callbacks)

    def _loggers(self) -> list:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        # TensorBoard appends to the run's folder across resumes; Lightning's CSV writer would delete an
        # existing metrics.csv, so each attempt (first start, each resume) gets its own CSV.
        attempt = len(list((self.run_dir / "csv").glob("attempt_*")))
        return [
            TensorBoardLogger(save_dir=str(self.runs_dir), name="", version=self.run_id, default_hp_metric=False),
            CSVLogger(save_dir=str(self.run_dir), name="csv", version=f"attempt_{attempt}"),
        ]

    def _run_callbacks(self, trainer_config: dict) -> list:
        """Checkpoints (last + the task's monitored best), the fit's record in them, RNG state, progress
        bar, prediction files."""
        from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar

        from .callbacks.run_state import (
            BestCheckpoint, FitRecord, LastCheckpoint, PredictionFiles, RNGState, RunModelSummary, RunProgressBar,
        )  # fmt: skip
        from .runs import BEST_PREFIX, CHECKPOINT_DIR

        configured = trainer_config.get("callbacks") or []
        callbacks = [RNGState(), FitRecord(self.fit_identity)]
        if trainer_config.get("enable_checkpointing") is not False and not any(
            isinstance(c, ModelCheckpoint) for c in configured
        ):
            # The best by the task's validation metric (when it has one), then last.ckpt at every epoch
            # end and every N steps, whatever the validation interval: saved after the best, so the
            # state it resumes from names the newest best file.
            directory = self.run_dir / CHECKPOINT_DIR
            monitor = getattr(self.model, "checkpoint_monitor", None)
            if monitor:
                callbacks.append(
                    BestCheckpoint(
                        dirpath=directory, filename=BEST_PREFIX + "{epoch}-{step}", monitor=monitor[0], mode=monitor[1],
                        save_top_k=1,
                    )
                )  # fmt: skip
            callbacks.append(LastCheckpoint(directory, self.config[self.subcommand].get("last_checkpoint_every_n_steps")))
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks.append(RunProgressBar())
        if trainer_config.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in configured
        ):
            trainer_config["enable_model_summary"] = False  # in place of Lightning's, which adds "Total FLOPs: 0"
            callbacks.append(RunModelSummary())
        if self.subcommand == "predict":
            config = self.config.predict
            untrained = config.ckpt_path is None
            default_dir = self.run_dir / ("predictions_untrained" if untrained else "predictions")
            callbacks.append(PredictionFiles(config.predict_dir or default_dir, untrained))
        return callbacks

    def before_fit(self) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    text = self._parser("fit").dump(self.config.fit)
                    logger.experiment.add_text("config", "```yaml\n" + text + "\n```")

    def after_fit(self) -> None:
        """The fit ended on its own (budget or stopping rule): test its best (or final) weights, then mark
        every checkpoint of the run finished, so it is never resumed and a test of it knows what it is."""
        from .callbacks.report import stopping_reason
        from .runs import CHECKPOINT_DIR, FINAL_WEIGHTS, LAST_CHECKPOINT, mark_finished

        trainer = self.trainer
        record = {
            "finished": not trainer.interrupted,
            "complete": not trainer.interrupted and not self.shortened,
            "stopping": stopping_reason(trainer),
        }
        monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) and c.best_model_path]
        best = monitored[0].best_model_path if monitored else ""
        selections = {LAST_CHECKPOINT: FINAL_WEIGHTS}
        if best:
            selections[Path(best).name] = self._selection(monitored[0])
        if self.config.fit.test_after_fit:
            if best:
                self.report.run["tested"] = f"best checkpoint {best} ({monitored[0].monitor})"
                self.report.run["selection"] = selections[Path(best).name]
            trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        if trainer.is_global_zero and record["finished"]:
            mark_finished(self.run_dir / CHECKPOINT_DIR, record, selections)
        self._print_locations()

    def _selection(self, checkpoint) -> str:
        """Which data chose the weights of ``checkpoint`` (a monitored ModelCheckpoint), for the record."""
        split = getattr(self.trainer.datamodule, "validation_split", None)
        split = split or "a validation split this datamodule does not describe (unknown whether it overlaps the test set)"
        return f"best {checkpoint.monitor} ({checkpoint.mode}) on {split}"

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self._discard_failed_start()
            raise

    def _discard_failed_start(self) -> None:
        """A new run that failed before writing any checkpoint can be neither resumed nor tested: it leaves no
        runs/<name>/<id>/ folder behind (a resumed run keeps its own)."""
        import shutil

        from .runs import CHECKPOINT_DIR

        if self.resumed or not self.trainer.is_global_zero or any(self.run_dir.glob(f"{CHECKPOINT_DIR}/*.ckpt")):
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def after_test(self) -> None:
        self._print_locations()

    def after_predict(self) -> None:
        from .callbacks.run_state import UNTRAINED_MARK, PredictionFiles
        from .data.images import IMAGE_SUFFIXES
        from .runs import RunError

        if not self.trainer.is_global_zero:
            return
        files = next(c for c in self.trainer.callbacks if isinstance(c, PredictionFiles))
        folder = getattr(self.datamodule, "predict_set", None)
        failed, skipped = getattr(folder, "failed", {}), getattr(folder, "skipped", [])
        total = files.images + len(failed)
        line = f"predictions: {files.out_dir}/ ({files.images} of {total} images written, {len(files.written)} files)"
        if files.untrained:
            line += f"; UNTRAINED weights (--allow_untrained, no --ckpt_path): see {files.out_dir / UNTRAINED_MARK}"
        print(line)
        if skipped:
            print(f"  skipped {len(skipped)} file(s) that are not images ({' '.join(IMAGE_SUFFIXES)}): {', '.join(skipped)}")
        if failed:
            raise RunError(
                f"{len(failed)} of {total} images in {folder.root} cannot be read, the other {files.images} were "
                f"written to {files.out_dir}/: {folder.failure_summary()}; replace or remove them and predict again"
            )

    def _print_locations(self) -> None:
        if not self.trainer.is_global_zero:
            return
        report = self.report
        lines = [f"run {report.name}/{self.run_id}"]
        if report.run["shortened"]:
            lines[0] += f" (shortened: {'; '.join(report.run['shortened'])}; it does not replace reports/{report.name}/)"
        if self.subcommand == "fit" and not self.config.fit.test_after_fit:
            lines.append("  report:      none (--test_after_fit false): `acda test -c CONFIG --ckpt_path CKPT` writes it")
        else:
            lines.append(f"  report:      {report.report_dir}/report.md")
        if self.subcommand == "fit":
            lines.append(f"  checkpoints: {self.run_dir / 'checkpoints'}/ (resume: add --ckpt_path last)")
            lines.append(f"  logs:        {self.run_dir}/ (tensorboard --logdir {self.runs_dir})")
        print("\n".join(lines))


def _check_predict_weights(config) -> None:
    """``acda predict`` uses trained weights: untrained ones only when asked for, so their outputs are never
    mistaken for a model's."""
    from .runs import RunError

    if config.ckpt_path is None and not config.allow_untrained:
        raise RunError(
            f"acda predict needs the weights to predict with: add --ckpt_path CHECKPOINT (e.g. "
            f"runs/{config.report.name}/<run_id>/checkpoints/best-*.ckpt, or `last` for the newest run); "
            f"--allow_untrained true predicts with untrained weights, marked UNTRAINED"
        )


def _config_file_args(args: list[str]) -> list[str]:
    """The files of the ``-c FILE`` / ``--config FILE`` / ``--config=FILE`` arguments of a command line, in order."""
    files, position = [], 0
    while position < len(args):
        arg = args[position]
        if arg in ("-c", "--config") and position + 1 < len(args):
            files.append(args[position + 1])
            position += 1
        elif arg.startswith("--config="):
            files.append(arg[len("--config=") :])
        position += 1
    return files


def _declares_own_budget(config_file: str) -> bool:
    """Whether a -c file says its trainer budget is the experiment's own (``own_budget: true``)."""
    import yaml

    path = Path(config_file)
    content = yaml.safe_load(path.read_text()) if path.is_file() else None
    return isinstance(content, dict) and content.get("own_budget") is True


def run_lightning(args: list[str]) -> None:
    from .runs import RUN_ID_ENV, RunError

    if "-h" in args or "--help" in args:
        print(SHORT_HELP.format(sub=args[0]))
        return
    args = ["--help" if arg == "--help-all" else arg for arg in args]
    for handler in logging.getLogger("lightning.pytorch").handlers:
        if not any(isinstance(f, _DropAdvertisement) for f in handler.filters):
            handler.addFilter(_DropAdvertisement())
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            ACDACLI(
                model_class=None, datamodule_class=None, args=args, save_config_kwargs={"overwrite": True},
                # a config mistake is one line (below), not ~55 lines of usage first
                parser_kwargs={"exit_on_error": False, **{sub: {"exit_on_error": False} for sub in LIGHTNING_SUBCOMMANDS}},
            )  # fmt: skip
        except argparse.ArgumentError as error:
            raise RunError(f"{error.message.strip()} (`acda {args[0]} --help` lists the options)") from None
        finally:
            os.environ.pop(RUN_ID_ENV, None)


def _tools_parser() -> argparse.ArgumentParser:
    from .data.synth import SYNTHESIZERS

    parser = argparse.ArgumentParser(
        prog="acda",
        description="ACDA experiment suite. Training: `acda {fit,validate,test,predict} -c CONFIG.yaml` "
        "(Lightning CLI; `acda fit --help`). Tools below.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in LIGHTNING_SUBCOMMANDS:
        commands.add_parser(name, help=f"Lightning `{name}` on a YAML config (see `acda {name} --help`)")

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="write a small synthetic dataset in the official layout")
    synth.add_argument("task", choices=SYNTHESIZERS.names(), help="which task's data to write")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--seed", type=int, default=0)

    report = commands.add_parser("report", help="build the study reports (reports/<study>/) from finished runs")
    report.add_argument("--root", type=Path, default=Path("reports"), help="folder holding the runs' reports")
    report.add_argument("--study", default=None, help="build only this study")

    from .plots import FIGURES

    figures = commands.add_parser("figures", help="draw a figure of the paper")
    figure_commands = figures.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    for name, draw in FIGURES.items():
        figure = figure_commands.add_parser(name, help=draw.help, description=draw.help)
        figure.add_argument("--out", type=Path, help=f"PNG to write (default reports/figures/{name}.png)")
        for flag, options in draw.arguments:
            figure.add_argument(flag, **options)

    models = commands.add_parser("models", help="list registered models with their parameter counts")
    models.add_argument("pattern", nargs="?", default="*")

    from .bench import add_arguments

    add_arguments(commands.add_parser("bench", help="time/memory/FLOPs of ACDA vs conv (paper Tables 6-7)"))
    from .export import add_parser as add_export_parser

    add_export_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``acda`` command; errors propagate as exceptions (``run`` turns them into one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        run_lightning(argv)
        return 0
    parser = _tools_parser()
    args, overrides = parser.parse_known_args(argv)
    if overrides and args.command != "export":  # only export passes config overrides on (to the model's parser)
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if args.command == "data":
        from .data.synth import synthesize

        for path in synthesize(args.task, args.out, seed=args.seed):
            print(path)
    elif args.command == "report":
        from .studies import build_reports

        for line in build_reports(args.root, only=args.study):
            print(line)
    elif args.command == "figures":
        from .plots import FIGURES

        options = {key: value for key, value in vars(args).items() if key not in ("command", "figure", "out")}
        out = args.out or Path(f"reports/figures/{args.figure}.png")
        FIGURES.get(args.figure)(out, **options)
        print(out)
    elif args.command == "models":
        from .models import create_model, list_models

        names = list_models(args.pattern)
        if not names:
            raise ValueError(f"no registered model matches {args.pattern!r}; the models: {', '.join(list_models())}")
        print(f"{'model':16s} {'conv':5s} {'parameters':>12s}  paper (ours vs paper)")
        for name in names:
            for conv in ("acda", "conv"):  # every registered model takes conv="acda"|"conv"
                model = create_model(name, conv=conv)
                count = sum(p.numel() for p in model.parameters())
                paper = ", ".join(
                    f"{value / 1e6:.2f}M {source} ({100 * (count / value - 1):+.1f}%)"
                    for source, value in getattr(model, "paper_parameters", {}).items()
                )
                print(f"{name:16s} {conv:5s} {count:>12,d}  {paper or '-'}")
    elif args.command == "export":
        from .export import export

        print(export(args, overrides))
    elif args.command == "bench":
        from .bench import run

        print(run(args))
    return 0


def run() -> int:
    """The console script: a user's mistake (missing data, a bad checkpoint, a NaN loss) is one line on
    stderr and exit code 2, not a traceback; ``ACDA_DEBUG=1`` shows the traceback."""
    try:
        return main()
    except (OSError, ValueError, KeyError, FloatingPointError) as error:
        if os.environ.get("ACDA_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"acda: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
