"""Adding a task is adding files: a throw-away sixth task, written as new files into a copy of the
package, is found by every registry (model, task, data module, synthetic data, study) and runs end to
end through the real CLI: `acda data synth`, `acda fit` (train, then test), `acda report`."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import acda_lightning

NEW_FILES = {
    "models/blobs.py": '''
        import torch
        from torch import nn

        from .layers import spatial_conv
        from .registry import register_model


        @register_model
        def blob_counter(conv: str = "acda") -> nn.Module:
            return nn.Sequential(spatial_conv(conv, 1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
        ''',
    "data/blobs.py": '''
        from pathlib import Path

        import numpy as np
        import torch
        from torch.utils.data import TensorDataset

        from .base import TaskDataModule
        from .synth import register_synth


        class BlobsDataModule(TaskDataModule):
            def __init__(self, root: str = "data/Blobs", batch_size: int = 8, num_workers: int = 0):
                super().__init__()

            def setup(self, stage=None):
                arrays = np.load(Path(self.hparams.root) / "blobs.npz")
                self.train = TensorDataset(torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]))
                self.test = TensorDataset(torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"]))

            def train_dataloader(self):
                return self._loader(self.train, shuffle=True)

            def test_dataloader(self):
                return self._loader(self.test)


        @register_synth("blobs")
        def write_blobs(out: Path, seed: int) -> list[Path]:
            rng = np.random.default_rng(seed)
            images = (rng.random((40, 1, 12, 12)) < 0.2).astype(np.float32)
            counts = images.sum(axis=(1, 2, 3)).astype(np.float32)[:, None] / 10
            path = out / "Blobs" / "blobs.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, train_x=images[:32], train_y=counts[:32], test_x=images[32:], test_y=counts[32:])
            return [path]
        ''',
    "tasks/blobs.py": '''
        import torch
        import torch.nn.functional as F

        from .base import TaskModule


        class BlobCounting(TaskModule):
            def __init__(self, net: str = "blob_counter", net_kwargs: dict | None = None, lr: float = 0.01):
                super().__init__(net, net_kwargs)
                self.save_hyperparameters()

            def training_step(self, batch, batch_idx):
                images, counts = batch
                loss = self.check_finite(F.mse_loss(self(images), counts), batch_idx)
                self.log("train/loss", loss)
                return loss

            def test_step(self, batch, batch_idx):
                images, counts = batch
                self.log("test/mae", (self(images) - counts).abs().mean())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        ''',
    "studies/blobs.py": '''
        from pathlib import Path

        from ..utils import write_text
        from . import register_study
        from .common import load_run, missing_runs


        @register_study("blobs")
        def build_blobs(root: Path) -> list[str]:
            record = load_run(root, "blobs_acda")
            if record is None:
                return [missing_runs(root, "blobs", ["blobs_acda"], "acda fit -c tasks/blobs/acda.yaml")]
            write_text(root / "blobs" / "report.md", f"blobs MAE {record['metrics']['test/mae']:.4f}\\n")
            return [f"blobs: {root / 'blobs' / 'report.md'}"]
        ''',
}

CONFIG = """
seed_everything: 0
model:
  class_path: acda_lightning.tasks.BlobCounting
  init_args: {net: blob_counter, net_kwargs: {conv: acda}}
data:
  class_path: acda_lightning.data.BlobsDataModule
  init_args: {root: DATA/Blobs}
trainer: {accelerator: cpu, max_epochs: 2, enable_progress_bar: false}
report:
  name: blobs_acda
"""

SCRIPT = """
import sys
from acda_lightning.cli import main
from acda_lightning.models import list_models

assert "blob_counter" in list_models(), list_models()
main(["data", "synth", "blobs", "--out", "DATA"])
main(["fit", "-c", "tasks/blobs/acda.yaml", "--report.root", "reports", "--trainer.default_root_dir", "runs"])
main(["report", "--root", "reports", "--study", "blobs"])
"""


def test_a_sixth_task_is_new_files_only(tmp_path):
    package = Path(acda_lightning.__file__).parent
    copy = tmp_path / "site" / "acda_lightning"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for relative, source in NEW_FILES.items():
        assert not (copy / relative).exists(), f"{relative} already exists: pick another throw-away name"
        (copy / relative).write_text(textwrap.dedent(source))
    (tmp_path / "tasks" / "blobs").mkdir(parents=True)
    (tmp_path / "tasks" / "blobs" / "acda.yaml").write_text(CONFIG)

    # no file of the package was edited: the copy differs from the original by the new files alone
    comparison = filecmp.dircmp(package, copy, ignore=["__pycache__"])
    stack, changed = [comparison], []
    while stack:
        node = stack.pop()
        changed += [str(Path(node.right) / name) for name in node.diff_files]
        stack += node.subdirs.values()
    assert not changed

    environment = {**os.environ, "PYTHONPATH": str(copy.parent)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "reports" / "blobs_acda" / "metrics.json").read_text())
    assert record["complete"] and record["training"]["epochs"] == 2
    report = (tmp_path / "reports" / "blobs" / "report.md").read_text()
    assert report == f"blobs MAE {record['metrics']['test/mae']:.4f}\n"
