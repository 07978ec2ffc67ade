"""Runs you can trust, through the real CLI: resume equals an uninterrupted run, shortened runs never
replace complete ones, every entry point works, bad checkpoints are one clear error, DDP writes once."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from acda_lightning.cli import main
from acda_lightning.runs import RunError

TOY = Path("tasks/toy/acda.yaml").resolve()
TOY_CONV = Path("tasks/toy/conv.yaml").resolve()
SHORT = ["--trainer.max_epochs", "3", "--data.steps_per_epoch", "8", "--trainer.enable_progress_bar", "false"]


def _cli(tmp_path, subcommand, config=TOY, *overrides):
    return main(
        [subcommand, "-c", str(config), "--report.root", str(tmp_path / "reports"),
         "--trainer.default_root_dir", str(tmp_path / "runs"), *overrides]
    )


def _acda(tmp_path, *args, env=None):
    """The installed console script's code path (`python -m acda_lightning.cli`) in a subprocess."""
    environment = {**os.environ, "PYTHONPATH": str(Path.cwd()), **(env or {})}
    return subprocess.run([sys.executable, "-m", "acda_lightning.cli", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)


def _only(folder: Path) -> Path:
    (entry,) = list(folder.iterdir())
    return entry


def _weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture
def restore_sigint():
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after one


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, restore_sigint):
    deterministic = [*SHORT, "--trainer.deterministic", "true"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _cli(whole, "fit", TOY, *deterministic)

    with pytest.raises(SystemExit):  # Ctrl-C in the middle of epoch 2 (after the epoch-1 checkpoint)
        _cli(parts, "fit", TOY, *deterministic, "--trainer.callbacks+=conftest.InterruptAtStep",
             "--trainer.callbacks.step=12")
    run = _only(parts / "runs/toy_acda")
    assert (run / "checkpoints/last.ckpt").is_file() and not (parts / "reports").exists()
    _cli(parts, "fit", TOY, *deterministic, "--ckpt_path", "last")

    assert _only(parts / "runs/toy_acda") == run, "the resumed run continues in its own folder"
    resumed, uninterrupted = _weights(run / "checkpoints/last.ckpt"), _weights(_only(whole / "runs/toy_acda") / "checkpoints/last.ckpt")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    record = json.loads((_only(parts / "reports/toy_acda/runs") / "metrics.json").read_text())
    assert record["run_id"] == run.name and record["training"]["steps"] == 24
    assert [row["epoch"] for row in record["history"]] == [0, 1, 2], "the history survives the resume"
    assert len(list((run / "csv").iterdir())) == 2 and list(run.glob("events.out.tfevents.*"))


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    with pytest.raises(RunError, match="no run of toy_acda to resume"):
        _cli(tmp_path, "fit", TOY, *SHORT, "--ckpt_path", "last")


def test_entry_points_validate_test_predict(tmp_path):
    _cli(tmp_path, "fit", TOY, *SHORT)
    checkpoint = _only(tmp_path / "runs/toy_acda") / "checkpoints/last.ckpt"
    assert checkpoint.is_file()
    _cli(tmp_path, "validate", TOY, "--ckpt_path", str(checkpoint))
    _cli(tmp_path, "predict", TOY, "--ckpt_path", str(checkpoint), "--predict_dir", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "heldout.npy", "heldout.png", "shifted.npy", "shifted.png", "train.npy", "train.png"]
    assert torch.from_numpy(__import__("numpy").load(tmp_path / "out/train.npy")).shape == (100, 100)

    _cli(tmp_path, "test", TOY, "--ckpt_path", str(checkpoint))
    tested = [json.loads(p.read_text()) for p in (tmp_path / "reports/toy_acda/runs").glob("*/metrics.json")]
    from_checkpoint = next(r for r in tested if r["training"]["tested"].startswith("checkpoint"))
    assert from_checkpoint["training"]["steps"] == 24 and from_checkpoint["metrics"]["test/mse"] > 0


def test_corrupt_and_foreign_checkpoints_are_one_clear_error(tmp_path):
    bad = tmp_path / "torn.ckpt"
    bad.write_bytes(b"PK\x03\x04 half a checkpoint")
    with pytest.raises(RunError, match="torn.ckpt is corrupt or not a Lightning checkpoint"):
        _cli(tmp_path, "test", TOY, "--ckpt_path", str(bad))

    result = _acda(tmp_path, "test", "-c", str(TOY), "--ckpt_path", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("acda: error: checkpoint") and "torn.ckpt" in result.stderr
    assert "Traceback" not in result.stderr

    _cli(tmp_path, "fit", TOY_CONV, "--trainer.fast_dev_run", "true", "--trainer.enable_checkpointing", "true")
    conv_checkpoint = tmp_path / "conv.ckpt"
    torch.save({"state_dict": {"net.conv.weight": torch.zeros(1, 1, 7, 7)}}, conv_checkpoint)
    with pytest.raises(RunError, match="conv.ckpt was saved from a different model"):
        _cli(tmp_path, "validate", TOY, "--ckpt_path", str(conv_checkpoint))


def test_untrained_test_is_marked_and_replaces_nothing(tmp_path):
    _cli(tmp_path, "test", TOY)
    record = json.loads((_only(tmp_path / "reports/toy_acda/runs") / "metrics.json").read_text())
    assert record["complete"] is False and record["shortened"] == ["untrained weights (no --ckpt_path)"]
    assert not (tmp_path / "reports/toy_acda/metrics.json").exists()


def test_quiet_cli_and_honest_tools(tmp_path, capsys):
    main(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--ckpt_path" in help_text and len(help_text.splitlines()) < 40
    with pytest.raises(FileNotFoundError, match="does/not/exist"):
        main(["report", "--root", str(tmp_path / "does/not/exist")])
    assert not (tmp_path / "does").exists()

    makefile = Path("Makefile").read_text()
    from acda_lightning.cli import _tools_parser, LIGHTNING_SUBCOMMANDS

    commands = set(_tools_parser()._subparsers._group_actions[0].choices) | set(LIGHTNING_SUBCOMMANDS)
    used = {line.split("$(ACDA)")[1].split()[0] for line in makefile.splitlines() if "$(ACDA)" in line and "ACDA :=" not in line}
    assert used and used <= commands, f"Makefile calls acda commands that do not exist: {used - commands}"


def test_fit_prints_no_warning_and_says_where_things_are(tmp_path):
    result = _acda(tmp_path, "fit", "-c", str(TOY), *SHORT)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Warning" not in output and "warn" not in output.lower(), output
    run = _only(tmp_path / "runs/toy_acda")
    assert f"checkpoints: runs/toy_acda/{run.name}/checkpoints/" in output and "tensorboard --logdir" in output
    assert "shortened: max_epochs=3 (the config's own: 60)" in output


def test_ddp_two_processes_match_one(tmp_path):
    """2 CPU ranks (gloo) train and test the toy through the CLI: same test metrics, files written once."""
    short = [*SHORT, "--trainer.accelerator", "cpu"]
    (tmp_path / "one").mkdir()
    single = _acda(tmp_path / "one", "fit", "-c", str(TOY), *short)
    (tmp_path / "two").mkdir()
    double = _acda(tmp_path / "two", "fit", "-c", str(TOY), *short, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert single.returncode == 0 and double.returncode == 0, double.stderr[-3000:]
    one = json.loads((_only(tmp_path / "one/reports/toy_acda/runs") / "metrics.json").read_text())
    two = json.loads((_only(tmp_path / "two/reports/toy_acda/runs") / "metrics.json").read_text())
    assert two["environment"]["devices"] == 2 and two["environment"]["strategy"] == "DDPStrategy"
    assert two["training"]["steps"] == one["training"]["steps"]
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert len(list((tmp_path / "two/runs/toy_acda").iterdir())) == 1  # both ranks wrote into one run
    assert len(list((tmp_path / "two/reports/toy_acda/runs").iterdir())) == 1
