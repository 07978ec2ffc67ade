import json
import os
from pathlib import Path

import torch

# Triton's interpreter (TRITON_INTERPRET=1) is what runs the Triton kernel on CPU
# (tests/test_triton_kernel.py). It must be chosen before triton is first imported: triton.language's own
# helpers (tl.sum, ...) are built compiled or interpreted at that moment, for the whole process, and
# lightning and torch.export import triton. So it is set here, before anything imports triton, and only
# where there is no CUDA device: there it touches nothing but impl="triton" (inductor's CPU backend does
# not use Triton), and on a GPU machine the kernels stay compiled for the gpu-marked tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_determinism():
    """Every test starts seeded, and leaves torch's determinism switch as it found it: a
    Trainer(deterministic=True) turns it on for the whole process, and impl="auto" reads it."""
    torch.manual_seed(0)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


class InterruptAtStep(Callback):
    """Presses Ctrl-C once ``global_step`` reaches ``step``: the resume tests add it through the CLI
    (``--trainer.callbacks+=conftest.InterruptAtStep``)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


@pytest.fixture(scope="session")
def synthetic_workdir(tmp_path_factory):
    """``synthetic_workdir(task)`` -> a folder whose data/ holds `acda data synth <task>`'s output (task: a
    config folder or synth name), written once per session and shared: tests copy before they damage it."""
    from acda_lightning.cli import main
    from acda_lightning.data.synth import SYNTHESIZERS

    folders = {}

    def workdir(task: str) -> Path:
        if task not in folders:
            folders[task] = tmp_path_factory.mktemp(f"synth_{task}")
            if task in SYNTHESIZERS.names():
                main(["data", "synth", task, "--out", str(folders[task] / "data")])
        return folders[task]

    return workdir


@pytest.fixture
def budget_config(tmp_path):
    """Writes a config file that declares itself the experiment's own budget (``own_budget: true``) and sets
    it (``budget_config(max_epochs=2)`` -> its path).

    Passed as a second ``-c``, it makes a short run *complete* for its config (so it writes
    reports/<name>/ and studies read it, its record naming the budget and its config hash), where a file
    without the declaration, or the same values as ``--trainer.*`` overrides, would mark the run shortened."""

    def write(**trainer) -> str:
        path = tmp_path / f"budget_{len(list(tmp_path.glob('budget_*.yaml')))}.yaml"
        path.write_text("own_budget: true\ntrainer:\n" + "".join(f"  {key}: {value}\n" for key, value in trainer.items()))
        return str(path)

    return write


@pytest.fixture
def acda_fit(tmp_path, budget_config):
    """Runs `acda fit` through the real CLI with its outputs under tmp_path (reports/, runs/) and no
    progress bar: ``acda_fit(config, *overrides, budget=None)`` -> the record (metrics.json) it wrote.

    ``budget`` (trainer settings, e.g. ``{"max_epochs": 1}``) goes in as a second ``-c`` through
    ``budget_config``, so the run is complete for its config (checked). A complete run's record is read from
    reports/<name>/metrics.json (where studies read it); a shortened one's from its own
    reports/<name>/runs/<run_id>/."""
    from acda_lightning.cli import main

    reports = tmp_path / "reports"

    def records() -> dict:
        return {path: path.stat().st_mtime_ns for path in reports.glob("*/runs/*/metrics.json")}

    def fit(config, *overrides: str, budget: dict | None = None) -> dict:
        before = records()
        budget_args = ["-c", budget_config(**budget)] if budget else []
        main(
            ["fit", "-c", str(config), *budget_args, "--report.root", str(reports),
             "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false", *overrides]
        )  # fmt: skip
        written = [path for path, stamp in records().items() if before.get(path) != stamp]
        assert len(written) == 1, f"`acda fit -c {config}` wrote {len(written)} run records under {reports}"
        record = json.loads(written[0].read_text())
        assert record["complete"] or not budget, f"{config} with the budget {budget} is shortened: {record['shortened']}"
        if record["complete"]:
            record = json.loads((reports / record["run"] / "metrics.json").read_text())
        return record

    return fit
