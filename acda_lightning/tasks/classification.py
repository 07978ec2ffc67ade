"""Image classification (paper Sec. 4.1, Tables 1-2): cross-entropy, top-1/top-5 accuracy, SGD/AdamW schedules."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..plots import save_figure
from ..utils import write_text
from .base import TaskModule

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FIGURE_IMAGES = 8


class ImageClassification(TaskModule):
    """Train a classifier on ``(image, label)`` batches of [0, 1] images; test top-1/top-5 accuracy.

    - Loss: cross-entropy with optional ``label_smoothing``.
    - ``optimizer``: ``"sgd"`` (momentum, optional Nesterov) or ``"adamw"``; weight decay applies to
      weights only, never to norm layers' parameters or biases (1-D parameters).
    - ``schedule``: ``"cosine"`` (to zero) or ``"step"`` (x ``gamma`` at each of ``milestones``
      epochs), after ``warmup_epochs`` of linear warm-up; stepped every optimizer step.
    - ``mean``/``std`` normalise inputs inside the module, so data stays in [0, 1].
    - ``channels_last`` runs the network in NHWC. Precision (bf16/fp16 autocast) is the trainer's
      ``precision``; an EMA of the weights is Lightning's ``EMAWeightAveraging`` callback.
    Logs ``train/loss``, ``train/acc1``, ``train/lr``, ``train/images_per_second``, ``val/*`` and
    ``test/{loss,acc1,acc5}``; the best checkpoint is the one with the highest ``val/acc1``.
    """

    checkpoint_monitor = ("val/acc1", "max")

    def __init__(
        self,
        net: str = "lenet",
        net_kwargs: dict | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 1e-4,
        schedule: str = "cosine",
        warmup_epochs: float = 0.0,
        milestones: Sequence[int] = (30, 60, 80),
        gamma: float = 0.1,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__(net, net_kwargs)
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {schedule!r}")
        self.save_hyperparameters()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.num_classes = self.net.num_classes
        top_k = min(5, self.num_classes)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_acc1", MulticlassAccuracy(self.num_classes, top_k=1, average="micro"))
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc5", MulticlassAccuracy(self.num_classes, top_k=top_k, average="micro"))
        self.report_artifacts: dict = {}
        self._epoch_images, self._epoch_started = 0, 0.0

    def setup(self, stage: str) -> None:
        """Fail before training when the network's classes do not match the data's."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"the network predicts {self.num_classes} classes but {datamodule.root} holds {data_classes}; "
                f"set num_classes: {data_classes} in the config's model.init_args.net_kwargs"
            )
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=labels.shape[0])
        getattr(self, f"{stage}_acc1").update(logits.detach(), labels)
        metrics = {f"{stage}/loss": getattr(self, f"{stage}_loss"), f"{stage}/acc1": getattr(self, f"{stage}_acc1")}
        if stage != "train":
            getattr(self, f"{stage}_acc5").update(logits.detach(), labels)
            metrics[f"{stage}/acc5"] = getattr(self, f"{stage}_acc5")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "test")
        return loss, logits

    def on_train_epoch_start(self) -> None:
        self._epoch_images, self._epoch_started = 0, time.perf_counter()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        self._epoch_images += batch[1].shape[0]
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return self.check_finite(loss, batch_idx)

    def on_train_epoch_end(self) -> None:
        seconds = time.perf_counter() - self._epoch_started
        if self._epoch_images and seconds > 0:  # includes data loading: what the whole pipeline sustains
            self.log("train/images_per_second", self._epoch_images / seconds)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        if batch_idx == 0:
            images, labels = batch
            shown = min(FIGURE_IMAGES, images.shape[0])
            self.report_artifacts = {
                "images": images[:shown].float().permute(0, 2, 3, 1).cpu().numpy(),
                "labels": labels[:shown].cpu().numpy(),
                "predicted": logits[:shown].argmax(1).cpu().numpy(),
                "class_names": np.array(self._class_names()),
            }

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        probabilities = self(batch["image"]).float().softmax(1)
        top = probabilities.topk(min(5, self.num_classes), dim=1)
        return {"top_classes": top.indices, "top_probabilities": top.values}

    def write_predictions(self, outputs: dict, batch: dict, out_dir: Path) -> list[Path]:
        """<name>.json per image: its top-5 classes (index, name, probability) and its label when known."""
        names = self._class_names()
        written = []
        for row, name in enumerate(batch["name"]):
            record = {
                "top": [
                    {"class": int(index), "name": names[int(index)], "probability": float(probability)}
                    for index, probability in zip(outputs["top_classes"][row], outputs["top_probabilities"][row])
                ]
            }
            if "label" in batch:
                record["label"] = int(batch["label"][row])
            path = Path(out_dir) / f"{name}.json"
            write_text(path, json.dumps(record, indent=1) + "\n")
            written.append(path)
        return written

    def _class_names(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        classes = list(getattr(datamodule, "classes", None) or [])
        return classes if len(classes) == self.num_classes else [str(i) for i in range(self.num_classes)]

    def configure_optimizers(self):
        decay, no_decay = [], []
        for parameter in self.net.parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim <= 1 else decay).append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if self.hparams.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                groups, lr=self.hparams.lr, momentum=self.hparams.momentum, nesterov=self.hparams.nesterov
            )
        else:
            optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total_steps / max(1, self.trainer.max_epochs or 1)
        scale = learning_rate_scale(
            total_steps,
            warmup_steps=round(self.hparams.warmup_epochs * steps_per_epoch),
            schedule=self.hparams.schedule,
            milestone_steps=[round(m * steps_per_epoch) for m in self.hparams.milestones],
            gamma=self.hparams.gamma,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def report_figures(self, artifacts: dict, run_dir: Path) -> None:
        """figure.png: the first test images with their true and predicted classes (wrong ones in red)."""
        import matplotlib.pyplot as plt

        images, names = artifacts["images"], artifacts["class_names"]
        figure, axes = plt.subplots(1, len(images), figsize=(2.0 * len(images), 2.4), squeeze=False)
        for axis, image, label, predicted in zip(axes[0], images, artifacts["labels"], artifacts["predicted"]):
            axis.imshow(np.clip(image, 0, 1))
            axis.set_title(f"true {names[label]}\npred {names[predicted]}", fontsize=8,
                           color="black" if label == predicted else "red")
            axis.axis("off")
        save_figure(figure, run_dir / "figure.png")


def learning_rate_scale(total_steps: int, warmup_steps: int, schedule: str, milestone_steps: Sequence[int], gamma: float):
    """step -> multiplier of the base learning rate: linear warm-up, then cosine to zero or step decay."""

    def scale(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return gamma ** sum(step >= milestone for milestone in milestone_steps)

    return scale
