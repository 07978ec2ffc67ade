"""The CLI's tools, the stopping rule, and bad input: each error names the file or value and the fix."""

import math

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from acda_lightning.callbacks import ConvergenceStopping
from acda_lightning.cli import main
from acda_lightning.tasks import PatternDetection
from acda_lightning.utils import atomic_path, write_json
from acda_lightning.utils.checkpoint import AtomicCheckpointIO

from helpers import assert_drawn_png


def test_figures_bases_writes_a_png(tmp_path):
    out = tmp_path / "bases.png"
    main(["figures", "bases", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_synth_toy(tmp_path):
    main(["data", "synth", "toy", "--out", str(tmp_path)])
    with np.load(tmp_path / "toy.npz") as arrays:
        assert arrays["canvas"].shape == (120, 120) and arrays["target"].sum() == 25
    assert_drawn_png(tmp_path / "toy.png")


def test_models_command_lists_the_registry(capsys):
    main(["models"])
    assert "toy_detector" in capsys.readouterr().out


def test_unknown_command_exits_with_usage(capsys):
    with pytest.raises(SystemExit):
        main(["train"])
    assert "invalid choice" in capsys.readouterr().err


class _Stub:
    """The two Trainer attributes ConvergenceStopping reads, driven by hand."""

    def __init__(self):
        self.callback_metrics, self.current_epoch, self.global_step, self.should_stop = {}, 0, 0, False


def _feed(stopper, values):
    trainer = _Stub()
    for epoch, value in enumerate(values):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"train/loss": torch.tensor(value)}
        stopper.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            return epoch
    return None


def test_convergence_stops_after_patience_epochs_without_relative_progress():
    stopper = ConvergenceStopping(rel_tol=0.01, patience=3)
    assert _feed(stopper, [1.0, 0.5, 0.25, 0.249, 0.248, 0.2479, 0.1]) == 5
    assert stopper.reason.startswith("converged after 6 epochs")
    assert _feed(ConvergenceStopping(rel_tol=0.01, patience=3), [1.0, 0.5, 0.25, 0.12]) is None


def test_convergence_rejects_nan_and_unlogged_monitor():
    with pytest.raises(FloatingPointError, match="epoch 1"):
        _feed(ConvergenceStopping(), [1.0, math.nan])
    with pytest.raises(KeyError, match="val/loss"):
        _feed(ConvergenceStopping(monitor="val/loss"), [1.0])


def test_nan_loss_names_the_step_and_batch():
    module = PatternDetection()
    with pytest.raises(FloatingPointError, match="batch 7"):
        module.check_finite(torch.tensor(float("nan")), 7)


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text().strip().startswith("{") and list(tmp_path.iterdir()) == [target]
    write_json(target, {"nan": float("nan")})
    assert '"nan": null' in target.read_text()


def test_checkpoint_save_is_atomic_and_resumable(tmp_path):
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_trainer_stops_training_on_nan_loss(tmp_path):
    from acda_lightning.data import ToyPatternDataModule

    module = PatternDetection(net_kwargs={"conv": "conv"}, lr=1e6)
    trainer = Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="global step"):
        trainer.fit(module, ToyPatternDataModule(steps_per_epoch=50))
