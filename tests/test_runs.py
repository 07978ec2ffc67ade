"""Runs you can trust, through the real CLI: resume equals an uninterrupted run, shortened runs never
replace complete ones, every entry point works, bad checkpoints are one clear error, DDP writes once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from acda_lightning.cli import main
from acda_lightning.runs import RUN_ID_ENV, RunError, new_run_id

TOY = Path("tasks/toy/acda.yaml").resolve()
TOY_CONV = Path("tasks/toy/conv.yaml").resolve()
CROWD = Path("tasks/crowd/sha_ad_resnet_s.yaml").resolve()
TINY_CROWD = [
    "--data.crop_size", "64", "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
]  # fmt: skip
SHORT = ["--trainer.max_epochs", "3", "--data.steps_per_epoch", "8", "--trainer.enable_progress_bar", "false"]


def _cli(tmp_path, subcommand, config=TOY, *overrides):
    return main(
        [subcommand, "-c", str(config), "--report.root", str(tmp_path / "reports"),
         "--trainer.default_root_dir", str(tmp_path / "runs"), *overrides]
    )


def _acda(tmp_path, *args, env=None):
    """The installed console script's code path (`python -m acda_lightning.cli`) in a subprocess."""
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(env or {})}
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
    with pytest.raises(RunError, match="no unfinished run of toy_acda to resume"):
        _cli(tmp_path, "fit", TOY, *SHORT, "--ckpt_path", "last")


def test_run_ids_sort_by_start_time_within_one_second(monkeypatch):
    """`--ckpt_path last` takes the newest unfinished run by its id: ids of one second must not sort by their
    random suffix."""
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    ids = []
    for _ in range(5):
        ids.append(new_run_id())
        time.sleep(0.002)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_last_resumes_only_the_newest_unfinished_run_and_never_a_finished_one(tmp_path, restore_sigint, capsys):
    with pytest.raises(SystemExit):
        _cli(tmp_path, "fit", TOY, *SHORT, "--trainer.callbacks+=conftest.InterruptAtStep", "--trainer.callbacks.step=12")
    (unfinished,) = list((tmp_path / "runs/toy_acda").iterdir())
    _cli(tmp_path, "test", TOY, "--ckpt_path", str(unfinished / "checkpoints/last.ckpt"))
    tested = json.loads((_only(tmp_path / "reports/toy_acda/runs") / "metrics.json").read_text())
    assert tested["shortened"] == [f"weights of unfinished run {unfinished.name} (epoch 0, step 8)"]
    assert tested["training"]["stopping"] == "unknown (the fit had not finished)"

    _cli(tmp_path, "fit", TOY, *SHORT)  # a newer run, which finishes
    # (the `acda test` above has a log folder too, with no checkpoints, possibly from the same second)
    (finished,) = [run for run in (tmp_path / "runs/toy_acda").iterdir() if run != unfinished and (run / "checkpoints").is_dir()]
    files = {path: path.stat().st_mtime_ns for path in [*finished.rglob("*"), *(tmp_path / "reports").rglob("*")] if path.is_file()}
    capsys.readouterr()
    _cli(tmp_path, "fit", TOY, *SHORT, "--ckpt_path", "last")
    assert f"resuming run toy_acda/{unfinished.name} from {unfinished}/checkpoints/last.ckpt (newer finished runs left alone: {finished.name})" in capsys.readouterr().out
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in files.items()), "the finished run is untouched"
    assert torch.load(unfinished / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 24

    folders = set((tmp_path / "runs/toy_acda").iterdir())
    with pytest.raises(RunError, match=f"every run has finished \\(newest: {finished.name}\\)"):
        _cli(tmp_path, "fit", TOY, *SHORT, "--ckpt_path", "last")
    with pytest.raises(RunError, match=f"from run {finished.name}, which has finished .*drop --ckpt_path to start a new run"):
        _cli(tmp_path, "fit", TOY, *SHORT, "--ckpt_path", str(finished / "checkpoints/last.ckpt"))
    assert set((tmp_path / "runs/toy_acda").iterdir()) == folders, "refused resumes leave no run folder"


def test_saved_config_starts_a_new_run_beside_the_old_one(tmp_path):
    _cli(tmp_path, "fit", TOY, *SHORT, "--trainer.max_epochs", "1")
    (first,) = list((tmp_path / "runs/toy_acda").iterdir())
    main(["fit", "-c", str(first / "config.yaml")])
    runs = sorted((tmp_path / "runs/toy_acda").iterdir())
    assert len(runs) == 2 and first in runs and not list(first.glob("toy_acda")), "not nested inside the old run"


def test_a_test_is_promoted_only_for_weights_of_a_complete_fit_of_the_same_config(tmp_path, budget_config):
    lowered = tmp_path / "lowered.yaml"
    lowered.write_text("trainer:\n  max_epochs: 2\n")
    _cli(tmp_path, "fit", TOY, "-c", str(lowered), "--data.steps_per_epoch", "4", "--trainer.enable_progress_bar", "false")
    assert not (tmp_path / "reports/toy_acda/metrics.json").exists(), "a second -c that lowers the budget shortens"
    (short_run,) = list((tmp_path / "runs/toy_acda").iterdir())
    _cli(tmp_path, "test", TOY, "--ckpt_path", str(short_run / "checkpoints/last.ckpt"))
    assert not (tmp_path / "reports/toy_acda/metrics.json").exists(), "a shortened fit's weights never become the record"
    records = [json.loads(p.read_text()) for p in (tmp_path / "reports/toy_acda/runs").glob("*/metrics.json")]
    tested = next(r for r in records if r["training"]["tested"].startswith("checkpoint"))
    assert tested["complete"] is False and tested["shortened"][0].startswith(f"weights of shortened run {short_run.name} (max_epochs=2")
    assert tested["training"]["stopping"].startswith("stopped by the step/epoch limit after 2 epochs")
    assert tested["training"]["selection"] == "final weights (no model selection)"
    assert "selected by: final weights (no model selection)" in (tmp_path / f"reports/toy_acda/runs/{tested['run_id']}/report.md").read_text()

    own = budget_config(max_epochs=2)
    _cli(tmp_path, "fit", TOY, "-c", own, "--data.steps_per_epoch", "4", "--trainer.enable_progress_bar", "false")
    promoted = json.loads((tmp_path / "reports/toy_acda/metrics.json").read_text())
    assert promoted["complete"] and promoted["config"]["trainer"]["max_epochs"] == 2
    complete_run = tmp_path / "runs/toy_acda" / promoted["run_id"]
    earlier = set((tmp_path / "reports/toy_acda/runs").iterdir())
    _cli(tmp_path, "test", TOY, "--data.steps_per_epoch", "4", "--ckpt_path", str(complete_run / "checkpoints/last.ckpt"))
    assert json.loads((tmp_path / "reports/toy_acda/metrics.json").read_text()) == promoted, "another config's weights"
    # the test's own record (run ids of one second sort by their random suffix, so not the largest name)
    (newest_dir,) = set((tmp_path / "reports/toy_acda/runs").iterdir()) - earlier
    newest = json.loads((newest_dir / "metrics.json").read_text())
    assert newest["shortened"] == [f"weights of run {complete_run.name}, fitted with another config (differs in trainer.max_epochs)"]
    _cli(tmp_path, "test", TOY, "-c", own, "--data.steps_per_epoch", "4", "--ckpt_path", str(complete_run / "checkpoints/last.ckpt"))
    retested = json.loads((tmp_path / "reports/toy_acda/metrics.json").read_text())
    assert retested["run_id"] != promoted["run_id"] and retested["complete"], "the same config's complete weights"
    assert retested["config_sha256"] == promoted["config_sha256"]


def test_crowd_last_follows_every_epoch_and_a_resumed_run_keeps_one_best(tmp_path, monkeypatch, restore_sigint):
    """The crowd configs validate every few epochs: last.ckpt still follows every epoch end, and the run that
    resumes from it keeps exactly one best-*.ckpt, chosen on the validation split the record names."""
    from acda_lightning.data.crowd import synth_crowd

    synth_crowd(tmp_path / "data", seed=0)
    monkeypatch.chdir(tmp_path)  # the config reads data/ShanghaiTech
    tiny = [*TINY_CROWD, "--trainer.max_epochs", "5", "--trainer.check_val_every_n_epoch", "2"]
    with pytest.raises(SystemExit):  # in epoch 4 of 5; epochs 2 and 4 validate
        _cli(tmp_path, "fit", CROWD, *tiny, "--trainer.callbacks+=conftest.InterruptAtStep", "--trainer.callbacks.step=7")
    run = _only(tmp_path / "runs/crowd_sha_ad_resnet_s")
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6, "epoch 3 did not validate"
    _cli(tmp_path, "fit", CROWD, *tiny, "--ckpt_path", "last")
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    record = json.loads((_only(tmp_path / "reports/crowd_sha_ad_resnet_s/runs") / "metrics.json").read_text())
    assert record["training"]["tested"].startswith(f"best checkpoint {run}/checkpoints/best-")
    assert record["training"]["selection"].startswith("best val/mae (min) on ")


def test_unwritable_outputs_fail_before_training_and_failed_starts_leave_no_run_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RunError, match=f"--report.root {blocker}/reports is not writable"):
        main(["fit", "-c", str(TOY), *SHORT, "--report.root", str(blocker / "reports"),
              "--trainer.default_root_dir", str(tmp_path / "runs")])  # fmt: skip
    assert not (tmp_path / "runs").exists(), "refused before anything was trained or written"
    with pytest.raises(RunError, match="the runs folder .* is not writable"):
        _cli(tmp_path, "fit", TOY, *SHORT, "--trainer.default_root_dir", str(blocker / "runs"))

    monkeypatch.chdir(tmp_path)  # no data/ShanghaiTech here: the start fails once the trainer reads the data
    with pytest.raises(OSError, match="ShanghaiTech"):
        _cli(tmp_path, "fit", CROWD, *TINY_CROWD)
    assert not list((tmp_path / "runs").glob("*/*")), "a failed start leaves no runs/<name>/<id>/"

    result = _acda(tmp_path, "fit", "-c", str(TOY), "--trainer.maxepochs", "3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("acda: error:") and "--trainer.maxepochs" in first and "acda fit --help" in first, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, "the message, not the usage"


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
    def noise(output: str) -> list[str]:  # the test's own folder name has "warning" in it
        output = output.replace(str(tmp_path), "TMP").lower()
        return [word for word in ("warn", "v_num", "flops", "dirpath has changed", "weights_only") if word in output]

    result = _acda(tmp_path, "fit", "-c", str(TOY), *SHORT[:-2])  # with the progress bar
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert not noise(output), output
    run = _only(tmp_path / "runs/toy_acda")
    assert f"checkpoints: runs/toy_acda/{run.name}/checkpoints/" in output and "tensorboard --logdir" in output
    assert "shortened: max_epochs=3 (the config's own: 60)" in output
    for subcommand in ("test", "validate"):
        result = _acda(tmp_path, subcommand, "-c", str(TOY), "--ckpt_path", str(run / "checkpoints/last.ckpt"))
        output = result.stdout + result.stderr
        assert result.returncode == 0 and not noise(output), output


def test_ddp_two_processes_match_one(tmp_path):
    """2 CPU ranks (gloo) train and test the toy through the CLI: same test metrics, files written once."""
    short = [*SHORT, "--trainer.accelerator", "cpu"]
    (tmp_path / "one").mkdir()
    single = _acda(tmp_path / "one", "fit", "-c", str(TOY), *short)
    (tmp_path / "two").mkdir()
    double = _acda(tmp_path / "two", "fit", "-c", str(TOY), *short, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert single.returncode == 0 and double.returncode == 0, double.stderr[-3000:]
    assert "sync_dist" not in double.stderr, "the epoch means are reduced over the ranks"
    one = json.loads((_only(tmp_path / "one/reports/toy_acda/runs") / "metrics.json").read_text())
    two = json.loads((_only(tmp_path / "two/reports/toy_acda/runs") / "metrics.json").read_text())
    assert two["environment"]["devices"] == 2 and two["environment"]["strategy"] == "DDPStrategy"
    assert two["training"]["steps"] == one["training"]["steps"]
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert len(list((tmp_path / "two/runs/toy_acda").iterdir())) == 1  # both ranks wrote into one run
    assert len(list((tmp_path / "two/reports/toy_acda/runs").iterdir())) == 1


@pytest.mark.slow
def test_ddp_crowd_gradients_match_their_buckets(tmp_path):
    """A crowd model under 2-rank DDP: every weight's gradient has the weight's strides (a 1x1 conv after an
    ACDA layer got channels-last gradients, which DDP reports once per rank)."""
    from acda_lightning.data.crowd import synth_crowd

    synth_crowd(tmp_path / "data", seed=0)
    result = _acda(tmp_path, "fit", "-c", str(CROWD), *TINY_CROWD, "--trainer.max_epochs", "1", "--trainer.accelerator",
                   "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")  # 64-pixel crops: the layers are small enough for the "basis" kernel
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Grad strides do not match" not in result.stderr and "sync_dist" not in result.stderr
