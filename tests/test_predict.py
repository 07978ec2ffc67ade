"""`acda predict` as a user runs it: every image format the readers take, a corrupt image named while the
rest are written, no output from untrained weights unless asked for (and then marked), outputs in the run folder."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acda_lightning.cli import main, run
from acda_lightning.runs import RunError

TASKS = Path(__file__).parents[1] / "tasks"
TINY_NETS = {  # config -> overrides giving it a small network, so predict on CPU takes seconds
    "sr/realsr_v3_x4.yaml": ["--model.net_kwargs", "{version: v3, width: 8, blocks: 1}"],
    "denoise/sidd_acda_mse.yaml": ["--model.net_kwargs", "{conv: acda, width: 8, hidden: 8, blocks: 1, head_channels: 8}"],
    "crowd/sha_baseline.yaml": [],
}
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _photos(folder: Path, pngs: int, jpegs: int, size=(24, 32)) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"png_{i}.png" for i in range(pngs)] + [f"jpeg_{i}.{'jpg' if i % 2 else 'JPEG'}" for i in range(jpegs)]
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    return names


def _predict(workdir: Path, config: str, *overrides: str) -> None:
    main(["predict", "-c", str(TASKS / config), *TINY_NETS[config], *QUIET, "--data.num_workers", "0",
          "--trainer.default_root_dir", str(workdir / "runs"), "--report.root", str(workdir / "reports"), *overrides])


def _run_folder(workdir: Path) -> Path:
    (name,) = (workdir / "runs").iterdir()
    (run_dir,) = name.iterdir()
    return run_dir


@pytest.mark.parametrize("config", ["sr/realsr_v3_x4.yaml", "denoise/sidd_acda_mse.yaml"])
def test_every_image_format_is_predicted_and_counted(config, tmp_path, monkeypatch, capsys):
    """5 images in (3 PNGs, 2 JPEGs, one with an upper-case suffix) -> 5 restored PNGs out, and the summary says so;
    a file that is no image is named as skipped."""
    monkeypatch.chdir(tmp_path)
    names = _photos(tmp_path / "photos", pngs=3, jpegs=2)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    _predict(tmp_path, config, "--data.predict_root", "photos", "--allow_untrained", "true")
    out = _run_folder(tmp_path) / "predictions_untrained"
    suffix = "_SR" if config.startswith("sr") else ""
    assert sorted(p.name for p in out.glob(f"*{suffix}.png") if "compare" not in p.name and "before" not in p.name) == sorted(
        f"{Path(name).stem}{suffix}.png" for name in names
    )
    for name in names:  # each output is the restored image of its own input, at the task's output size
        restored = np.asarray(Image.open(out / f"{Path(name).stem}{suffix}.png"))
        assert restored.shape == ((96, 128, 3) if suffix else (24, 32, 3))
    printed = capsys.readouterr().out
    assert "(5 of 5 images written" in printed and "skipped 1 file(s) that are not images" in printed and "notes.txt" in printed


def test_a_corrupt_image_is_named_the_rest_are_written_and_the_exit_code_says_so(tmp_path, monkeypatch, capsys):
    """Crowd: 3 images, the second truncated -> 2 density maps, counts.csv with exactly their 2 rows, one error
    line naming the file, exit code 2."""
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "photos", pngs=0, jpegs=3, size=(40, 48))
    corrupt = tmp_path / "photos" / "jpeg_1.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    argv = ["acda", "predict", "-c", str(TASKS / "crowd/sha_baseline.yaml"), *QUIET, "--allow_untrained", "true",
            "--data.predict_root", "photos", "--data.num_workers", "0", "--predict_dir", "out",
            "--trainer.default_root_dir", "runs", "--report.root", "reports"]
    monkeypatch.setattr(sys, "argv", argv)
    assert run() == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("acda: error: 1 of 3 images") and "jpeg_1.jpg" in error[0]
    assert "the other 2 were written" in error[0]
    assert sorted(p.name for p in Path("out").glob("*_density.npy")) == ["jpeg_0_density.npy", "jpeg_2_density.npy"]
    with open("out/counts.csv", newline="") as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["jpeg_0", "jpeg_2"]
    assert "jpeg_1.jpg" in Path("out/UNREADABLE.txt").read_text()
    assert not list(Path("out").glob(".*.tmp"))


def test_predict_without_a_checkpoint_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "photos", pngs=1, jpegs=0)
    with pytest.raises(RunError, match="acda predict needs the weights.*--ckpt_path.*--allow_untrained"):
        _predict(tmp_path, "sr/realsr_v3_x4.yaml", "--data.predict_root", "photos")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "predictions").exists()


def test_untrained_outputs_are_marked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "photos", pngs=1, jpegs=0)
    _predict(tmp_path, "sr/realsr_v3_x4.yaml", "--data.predict_root", "photos", "--allow_untrained", "true",
             "--predict_dir", "chosen")
    assert "UNTRAINED" in (tmp_path / "chosen/UNTRAINED.txt").read_text()
    assert "UNTRAINED weights" in capsys.readouterr().out
    assert (tmp_path / "chosen/png_0_SR.png").is_file(), "an explicit --predict_dir is used as given"


def test_trained_predictions_default_to_the_run_folder(tmp_path, monkeypatch, capsys):
    """With a checkpoint and no --predict_dir the outputs go to runs/<name>/<run_id>/predictions/, unmarked;
    nothing is written into the working directory."""
    monkeypatch.chdir(tmp_path)
    toy = [str(TASKS / "toy/acda.yaml"), "--trainer.default_root_dir", "runs", "--report.root", "reports", *QUIET]
    main(["fit", "-c", *toy, "--trainer.max_epochs", "1", "--data.steps_per_epoch", "2", "--test_after_fit", "false"])
    (checkpoint,) = Path("runs").rglob("last.ckpt")
    capsys.readouterr()
    main(["predict", "-c", *toy, "--ckpt_path", str(checkpoint)])
    (predicted,) = [p for p in Path("runs/toy_acda").iterdir() if (p / "predictions").is_dir()]
    assert sorted(p.name for p in (predicted / "predictions").glob("*.png")) == ["heldout.png", "shifted.png", "train.png"]
    assert not (predicted / "predictions/UNTRAINED.txt").exists() and not Path("predictions").exists()
    assert f"predictions: {predicted / 'predictions'}/ (3 of 3 images written" in capsys.readouterr().out
