"""What super-resolution and denoising share: an image restored to an 8-bit estimate of its ground truth,
scored by PSNR/SSIM beside a baseline image, and written by ``acda predict`` as PNGs with a comparison figure."""

from __future__ import annotations

from pathlib import Path

import torch

from ..plots import image_grid
from ..data.images import write_png
from ..metrics import MeanPSNR, MeanSSIM, psnr
from .base import TaskModule


class Restoration(TaskModule):
    """A restoration task: ``restore(batch[input_key])`` estimates ``batch[target_key]``.

    Subclasses set the keys and labels below and implement ``restore`` (the 8-bit estimate) and
    ``baseline`` (what the estimate is compared with: bicubic upsampling, the noisy input); they keep
    their own training step and optimiser. Logged: ``{val,test}/{psnr,ssim}`` of the estimate and
    ``test/<baseline_name>_{psnr,ssim}`` of the baseline, all with ``metric_args`` (crop, Y channel).
    """

    checkpoint_monitor = ("val/psnr", "max")
    input_key: str
    target_key: str
    input_label: str
    target_label: str
    baseline_name: str  # equal to input_key when the input itself is the baseline
    output_suffix: str  # predict writes <name><output_suffix>.png and <name><compare_suffix>.png
    compare_suffix: str

    def __init__(self, net: str, net_kwargs: dict | None = None, **metric_args):
        super().__init__(net, net_kwargs)
        self.metric_args = metric_args
        for stage in ("val", "test", "test_baseline"):
            setattr(self, f"{stage}_psnr", MeanPSNR(**metric_args))
            setattr(self, f"{stage}_ssim", MeanSSIM(**metric_args))
        self.report_artifacts: dict = {}

    def restore(self, source: torch.Tensor) -> torch.Tensor:
        """The restored image, clamped and rounded to 8 bits (``data.images.quantize``)."""
        raise NotImplementedError

    def baseline(self, source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The image of ``size`` the restoration is compared with."""
        raise NotImplementedError

    def image_psnr(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image PSNR (dB) as the logged metrics measure it."""
        return psnr(image, target, **self.metric_args)

    def _score(self, stage: str, batch: dict) -> torch.Tensor:
        restored = self.restore(batch[self.input_key])
        psnr_metric, ssim_metric = getattr(self, f"{stage}_psnr"), getattr(self, f"{stage}_ssim")
        psnr_metric(restored, batch[self.target_key])
        ssim_metric(restored, batch[self.target_key])
        self.log_dict({f"{stage}/psnr": psnr_metric, f"{stage}/ssim": ssim_metric}, prog_bar=stage == "val",
                      batch_size=len(restored))
        return restored

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        restored = self._score("test", batch)
        target = batch[self.target_key]
        baseline = self.baseline(batch[self.input_key], target.shape[-2:])
        self.test_baseline_psnr(baseline, target)
        self.test_baseline_ssim(baseline, target)
        name = self.baseline_name
        self.log_dict({f"test/{name}_psnr": self.test_baseline_psnr, f"test/{name}_ssim": self.test_baseline_ssim},
                      batch_size=len(restored))
        if batch_idx == 0:
            self.report_artifacts = self.test_artifacts(batch, restored, baseline)

    def test_artifacts(self, batch: dict, restored: torch.Tensor, baseline: torch.Tensor) -> dict:
        """The arrays of the first test batch the report's figure is drawn from."""
        return {}

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        source = batch[self.input_key]
        restored = self.restore(source)
        outputs = {"input": source, "restored": restored, "baseline": self.baseline(source, restored.shape[-2:])}
        if self.target_key in batch:
            outputs["target"] = batch[self.target_key]
        return outputs

    def write_predictions(self, outputs: dict, batch: dict, out_dir: Path) -> list[Path]:
        """Per image ``<name><output_suffix>.png`` (the restored image) and ``<name><compare_suffix>.png``:
        input, baseline, ours and the ground truth when known, with PSNRs against it (as the paper's Fig. 9)."""
        written = []
        for index, name in enumerate(batch["name"]):
            stem = name.replace("/", "__")
            written.append(write_png(Path(out_dir) / f"{stem}{self.output_suffix}.png", outputs["restored"][index]))
            figure = Path(out_dir) / f"{stem}{self.compare_suffix}.png"
            image_grid([self._comparison(outputs, index)], figure, title=name)
            written.append(figure)
        return written

    def _comparison(self, outputs: dict, index: int) -> list[tuple[str, object]]:
        """(caption, HWC image) panels of image ``index``; the input is shown once when it is the baseline."""
        target = outputs["target"][index : index + 1] if "target" in outputs else None

        def scored(label: str, key: str) -> str:
            if target is None:
                return label
            return f"{label}, PSNR {self.image_psnr(outputs[key][index : index + 1], target)[0].item():.2f} dB"

        if self.baseline_name == self.input_key:
            shown = [(scored(self.input_label, "input"), "input")]
        else:
            shown = [(self.input_label, "input"), (scored(self.baseline_name, "baseline"), "baseline")]
        shown.append((scored("ours", "restored"), "restored"))
        if target is not None:
            shown.append((self.target_label, "target"))
        return [(label, outputs[key][index].detach().clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()) for label, key in shown]
