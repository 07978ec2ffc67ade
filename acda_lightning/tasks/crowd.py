"""Crowd counting (paper Sec. 4.2): MSE on the density map; MAE / RMSE of whole-image counts; Figs. 7-8."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import CountMAE, CountRMSE
from ..utils.checkpoint import state_dict_mismatch
from .base import TaskModule


def load_pretrained_trunk(net: torch.nn.Module, checkpoint: str | Path) -> None:
    """Copy a classification checkpoint's ``net.trunk.*`` weights into ``net.trunk``; one clear error on a mismatch."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {path} does not exist; pass a classification run's .ckpt")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    prefix = "net.trunk."
    trunk_state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not trunk_state:
        raise ValueError(f"{path} holds no '{prefix}*' weights: expected a checkpoint of an Ad-ResNet classification run")
    missing, unexpected, reshaped = state_dict_mismatch(trunk_state, net.trunk.state_dict())
    if missing or unexpected or reshaped:
        raise ValueError(
            f"{path} does not match this trunk (same variant and conv type needed): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(reshaped)} with other shapes (e.g. {reshaped[:3]})"
        )
    net.trunk.load_state_dict(trunk_state)


class CrowdCounting(TaskModule):
    """Regress ``density_scale`` x the density map with MSE (the paper's loss); count = map sum / scale.

    Validation and test run on whole images (padded by the data module, which records each image's
    own ``size``) and report ``mae`` and ``rmse`` (the paper's "MSE") of the counts summed over each
    image's own area, never its padding; the best checkpoint is the one with the lowest ``val/mae``.
    Adam with a cosine decay over ``trainer.max_epochs`` (``cosine_schedule``).
    ``pretrained``: a classification checkpoint whose trunk initialises this one (the paper starts
    from ImageNet-trained Ad-ResNets).
    """

    checkpoint_monitor = ("val/mae", "min")

    def __init__(
        self,
        net: str = "crowd_ad_resnet_s",
        net_kwargs: dict | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        density_scale: float = 100.0,
        cosine_schedule: bool = True,
        pretrained: str | None = None,
    ):
        super().__init__(net, net_kwargs)
        self.save_hyperparameters()
        if pretrained:
            load_pretrained_trunk(self.net, pretrained)
        self.val_mae, self.val_rmse = CountMAE(), CountRMSE()
        self.test_mae, self.test_rmse = CountMAE(), CountRMSE()
        self.report_artifacts: dict = {}

    def _density(self, image: torch.Tensor) -> torch.Tensor:
        """The predicted density map in heads per output pixel."""
        return self(image) / self.hparams.density_scale

    def _check_shapes(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        if predicted.shape != target.shape:
            raise ValueError(
                f"network output {tuple(predicted.shape)} and density target {tuple(target.shape)} differ: set "
                f"data.downsample to the network's output stride ({self.net.output_stride}) and data.size_divisor "
                f"to a multiple of its total stride ({self.net.size_divisor})"
            )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        output = self(batch["image"])
        self._check_shapes(output, batch["density"])
        loss = F.mse_loss(output, batch["density"] * self.hparams.density_scale)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(output), sync_dist=True)
        return self.check_finite(loss, batch_idx)

    def _image_area(self, batch: dict, density: torch.Tensor) -> list[tuple[int, int]]:
        """Per sample, the (rows, columns) of ``density`` that cover the image itself, not the padding.

        The data module pads whole images to the net's stride and to the batch's largest and
        records each image's own ``size``; a batch without sizes is unpadded (the net pads and
        crops inside itself), so its whole map is the image.
        """
        if "size" not in batch:
            return [tuple(density.shape[-2:])] * len(density)
        stride = self.net.output_stride
        return [(-(-int(height) // stride), -(-int(width) // stride)) for height, width in batch["size"].tolist()]

    def _evaluate(self, batch: dict, mae: CountMAE, rmse: CountRMSE, stage: str) -> tuple[torch.Tensor, list]:
        """Counts on each image's own area: the density predicted on the padding is cropped off before summing."""
        density = self._density(batch["image"])
        self._check_shapes(density, batch["density"])
        area = self._image_area(batch, density)
        counts = torch.stack([map_[:, :rows, :columns].sum() for map_, (rows, columns) in zip(density, area)])
        mae.update(counts, batch["count"])
        rmse.update(counts, batch["count"])
        self.log_dict({f"{stage}/mae": mae, f"{stage}/rmse": rmse}, batch_size=len(counts))
        return density, area

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_mae, self.val_rmse, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        density, area = self._evaluate(batch, self.test_mae, self.test_rmse, "test")
        if batch_idx == 0:
            rows, columns = area[0]
            predicted = density[0, 0, :rows, :columns]
            self.report_artifacts = {
                "image": _own_pixels(batch, 0).permute(1, 2, 0).float().cpu().numpy(),
                "density": batch["density"][0, 0, :rows, :columns].float().cpu().numpy(),
                "predicted_density": predicted.float().cpu().numpy(),
                "count": float(batch["count"][0]),
                "predicted_count": float(predicted.sum()),
            }

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Per image: its density map cropped to the image (size / output stride, rounded up) and its count."""
        density = self._density(batch["image"])
        maps = [map_[0, :rows, :columns] for map_, (rows, columns) in zip(density, self._image_area(batch, density))]
        return {"density": maps, "count": torch.stack([map_.sum() for map_ in maps]), "true_count": batch["count"].float()}

    def write_predictions(self, outputs: dict, batch: dict, out_dir: Path) -> list[Path]:
        """Per image: ``<name>_density.npy`` and ``<name>_overlay.png`` (Fig. 8 style), both of the image's own
        area; counts (the sums of those maps) merged into ``counts.csv``."""
        from ..data.crowd import write_counts_csv
        from ..utils import atomic_path

        out_dir = Path(out_dir)
        written, counts = [], {}
        for index, name in enumerate(batch["name"]):
            density = outputs["density"][index].detach().float().cpu().numpy()
            predicted, true = float(outputs["count"][index].detach()), float(outputs["true_count"][index])
            counts[name] = (predicted, true)
            array_path = out_dir / f"{name}_density.npy"
            with atomic_path(array_path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, density)
            image = _own_pixels(batch, index).permute(1, 2, 0).float().cpu().numpy()
            overlay = out_dir / f"{name}_overlay.png"
            density_overlay(image, density, overlay, _count_title(name, predicted, true))
            written += [array_path, overlay]
        write_counts_csv(out_dir / "counts.csv", counts)
        return [*written, out_dir / "counts.csv"]

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        epochs = self.trainer.max_epochs
        if not self.hparams.cosine_schedule or not epochs or epochs < 1:
            return optimizer
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)  # per epoch, to 0 at max_epochs
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def report_figures(self, artifacts: dict, run_dir: Path) -> None:
        """figure.png: the first test image with its predicted density (as the paper's Fig. 8) and the true one."""
        title = _count_title("test image 0", float(artifacts["predicted_count"]), float(artifacts["count"]))
        density_overlay(artifacts["image"], artifacts["predicted_density"], run_dir / "figure.png", title, artifacts["density"])


def _own_pixels(batch: dict, index: int) -> torch.Tensor:
    """Sample ``index``'s image without the padding the batch added (all of it when the batch has no sizes)."""
    image = batch["image"][index]
    if "size" not in batch:
        return image
    height, width = batch["size"][index].tolist()
    return image[:, :height, :width]


def _count_title(name: str, predicted: float, true: float) -> str:
    return f"{name}: count {predicted:.1f}" + ("" if math.isnan(true) else f" (ground truth {true:.0f})")


def density_overlay(image: np.ndarray, density: np.ndarray, path: Path, title: str, true_density: np.ndarray | None = None) -> None:
    """The image, the predicted density over it, and the true density when known (paper Fig. 8)."""
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    panels = [("image", None), ("predicted density", density)] + ([("ground truth", true_density)] if true_density is not None else [])
    peak = max(float(overlay.max()) for _, overlay in panels[1:])  # one colour scale for predicted and true
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, layout="constrained")
    height, width = image.shape[:2]
    for axis, (caption, overlay) in zip(axes[0], panels):
        axis.imshow(np.clip(image, 0, 1), extent=(0, width, height, 0))
        if overlay is not None:
            shown = axis.imshow(overlay, cmap="jet", alpha=0.55, extent=(0, width, height, 0), vmin=0, vmax=max(peak, 1e-6))
        axis.set_title(caption, fontsize=9)
        axis.axis("off")
    figure.colorbar(shown, ax=list(axes[0][1:]), shrink=0.8, label="heads per output pixel")
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)
