"""Toy pattern detection (paper Sec. 3.3): MSE to the centre map, and the translation test of Fig. 6b."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanSquaredError

from ..plots import image_grid
from ..utils import atomic_path
from .base import TaskModule


class PatternDetection(TaskModule):
    """Fit one map with SGD + MSE; test MSE on it, on a held-out map, and the shift error.

    ``test/shift_max_abs_diff`` is max |f(shift(x)) - shift(f(x))| over the region both maps
    share, ``equivariance_margin`` px away from either map's border (there zero padding and the
    fresh noise entering the shifted map legitimately change the output).
    """

    def __init__(
        self,
        net: str = "toy_detector",
        net_kwargs: dict | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        equivariance_margin: int = 8,
    ):
        super().__init__(net, net_kwargs)
        self.save_hyperparameters()
        self.test_mse = MeanSquaredError()
        self.test_shifted_mse = MeanSquaredError()
        self.test_heldout_mse = MeanSquaredError()
        self.test_shift_error = MaxMetric()
        self.val_mse = MeanSquaredError()
        self.report_artifacts: dict = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self(batch["image"]), batch["target"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return self.check_finite(loss, batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_mse(self(batch["image"]), batch["target"])
        self.log("val/mse", self.val_mse, prog_bar=True)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"output": self(batch["image"])}

    def write_predictions(self, outputs: dict, batch: dict, out_dir: Path) -> list[Path]:
        """<name>.npy (the output map) and <name>.png (input beside output) for each map."""
        written = []
        for index, name in enumerate(batch["name"]):
            image = batch["image"][index, 0].float().cpu().numpy()
            output = outputs["output"][index, 0].float().cpu().numpy()
            array = out_dir / f"{name}.npy"
            with atomic_path(array) as tmp, open(tmp, "wb") as handle:
                np.save(handle, output)
            picture = out_dir / f"{name}.png"
            image_grid([[("input", image), ("output", output)]], picture, title=name)
            written += [array, picture]
        return written

    def test_step(self, batch: dict, batch_idx: int) -> None:
        output = self(batch["image"])
        shifted_output = self(batch["shifted_image"])
        self.test_mse(output, batch["target"])
        self.test_shifted_mse(shifted_output, batch["shifted_target"])
        self.test_heldout_mse(self(batch["heldout_image"]), batch["heldout_target"])
        shift, margin = int(batch["shift"][0]), self.hparams.equivariance_margin
        size = output.shape[-1]
        if size - shift - 2 * margin < 1:
            raise ValueError(f"shift={shift} with equivariance_margin={margin} leaves no region to compare on a {size}^2 map")
        inner = slice(margin, size - shift - margin)
        moved = slice(shift + margin, size - margin)
        difference = shifted_output[..., moved, moved] - output[..., inner, inner]
        self.test_shift_error(difference.abs().max())
        self.log_dict(
            {
                "test/mse": self.test_mse,
                "test/shifted_mse": self.test_shifted_mse,
                "test/heldout_mse": self.test_heldout_mse,
                "test/shift_max_abs_diff": self.test_shift_error,
            }
        )
        if batch_idx == 0:
            self.report_artifacts = {
                name: tensor[0, 0].detach().float().cpu().numpy()
                for name, tensor in {
                    "image": batch["image"],
                    "target": batch["target"],
                    "output": output,
                    "shifted_image": batch["shifted_image"],
                    "shifted_target": batch["shifted_target"],
                    "shifted_output": shifted_output,
                }.items()
            }
            self.report_artifacts["shift"] = shift

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)

    def report_figures(self, artifacts: dict, run_dir: Path) -> None:
        """figure.png: input, target and output, on the map and on the shifted map."""
        shift = artifacts["shift"]
        image_grid(
            [
                [("input", artifacts["image"]), ("target", artifacts["target"]), ("output", artifacts["output"])],
                [
                    (f"input shifted {shift} px", artifacts["shifted_image"]),
                    ("shifted target", artifacts["shifted_target"]),
                    ("output on shifted input", artifacts["shifted_output"]),
                ],
            ],
            run_dir / "figure.png",
        )
