"""Callbacks that make a run resumable and its outputs findable and honest: checkpoints (last, best, the
fit's record in each), RNG state, the progress bar, prediction files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Checkpoint, ModelCheckpoint, ModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from ..runs import BEST_PREFIX, FIT_RECORD, LAST_CHECKPOINT
from ..utils import write_text


class FitRecord(Callback):
    """Writes the fit's identity (run id, config hash and the experiment config, why it is shortened) and
    how far it got into every checkpoint (``runs.FIT_RECORD``); the CLI marks them finished when it ends."""

    def __init__(self, identity: dict):
        self.identity = identity

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[FIT_RECORD] = {**self.identity, "finished": False, "epoch": trainer.current_epoch, "step": trainer.global_step}


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` at every training epoch end and every ``every_n_steps`` training steps (0: epoch ends
    only), whatever the validation interval: Lightning's ModelCheckpoint saves only when it validates, and
    the crowd configs validate every 5 epochs. A resume from an epoch end repeats an uninterrupted run
    exactly; from a mid-epoch step it continues with a fresh shuffle of that epoch's remaining batches."""

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = 0):
        self.path = Path(dirpath) / LAST_CHECKPOINT
        self.every_n_steps = every_n_steps or 0
        self._saved_step = -1

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == self._saved_step:
            return
        self._saved_step = trainer.global_step
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; the strategy writes once


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint by the task's validation metric. A resumed run first deletes ``best-*`` files its
    restored state does not know (saved after its last.ckpt by the attempt that was cut off), so every
    run keeps exactly one."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.dirpath:
            return
        known = {Path(path).resolve() for path in self.best_k_models}
        for path in Path(self.dirpath).glob(f"{BEST_PREFIX}*.ckpt"):
            if path.resolve() not in known:
                path.unlink()


class RunModelSummary(ModelSummary):
    """Lightning's layer table without its FLOPs: Lightning counts them on the module's ``example_input_array``,
    which these tasks leave unset (sizes differ per task and image), so every entry and the total read 0.
    ``acda bench`` measures the FLOPs of ACDA and conv layers."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs) -> None:
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style="bold magenta")
        for name, _ in columns:
            table.add_column(name, justify="right" if name == "Params" else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        console.print(
            f"Parameters: {get_human_readable_count(int(total_parameters))} "
            f"({get_human_readable_count(int(trainable_parameters))} trainable, "
            f"{get_formatted_model_size(model_size)} MB)"
        )


class RunProgressBar(RichProgressBar):
    """Lightning's rich progress bar without ``v_num``: the tail of a logger's version (``pt_0`` of the CSV
    logger's ``attempt_0``) says nothing; the run's id and folders are printed when it ends."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


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
