"""Callbacks that make a run resumable and its outputs findable: RNG state in checkpoints, prediction files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from ..utils import write_text


class RNGState(Callback):
    """Saves the Python, NumPy and torch RNG states in every checkpoint and restores them when a
    resumed fit starts training (after any sanity check), so random crops, flips and shuffles of
    the remaining epochs repeat those of an uninterrupted run."""

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position, "gauss": (has_gauss, gauss)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        random.setstate(state["python"])
        numpy_state = state["numpy"]
        np.random.set_state(
            ("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"], *numpy_state["gauss"])
        )
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


UNTRAINED_MARK = "UNTRAINED.txt"
UNREADABLE_LIST = "UNREADABLE.txt"


class PredictionFiles(BasePredictionWriter):
    """``acda predict``: hands each batch's outputs to the task's ``write_predictions`` under ``out_dir``.

    ``untrained``: the weights were never trained (``--allow_untrained``); ``UNTRAINED.txt`` in ``out_dir``
    says so before any output is written. Images the predict folder could not read are listed in
    ``UNREADABLE.txt`` there. ``images`` counts the images whose outputs were written.
    """

    def __init__(self, out_dir: str | Path, untrained: bool = False):
        super().__init__(write_interval="batch")
        self.out_dir, self.untrained = Path(out_dir), untrained
        self.written: list[Path] = []
        self.images = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        if self.untrained and trainer.is_global_zero:
            write_text(
                self.out_dir / UNTRAINED_MARK,
                "These outputs come from UNTRAINED (randomly initialised) weights: `acda predict` ran with\n"
                "--allow_untrained and no --ckpt_path. They show that the pipeline runs, not what a trained model predicts.\n",
            )

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        self.written.extend(pl_module.write_predictions(prediction, batch, self.out_dir))
        self.images += len(batch["name"])

    def on_predict_end(self, trainer, pl_module) -> None:
        failed = getattr(getattr(trainer.datamodule, "predict_set", None), "failed", {})
        if failed and trainer.is_global_zero:
            write_text(self.out_dir / UNREADABLE_LIST, "".join(f"{name}: {cause}\n" for name, cause in failed.items()))
