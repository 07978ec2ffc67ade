"""Checkpoint IO that writes to a temporary file and renames it, so a crash never leaves a torn .ckpt.

Reading a checkpoint given on the command line (and its one-line error for a corrupt or foreign
file) is ``acda_lightning.runs.read_checkpoint``: the CLI reads it before Lightning does.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(path):  # remote filesystems: fall back to Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def state_dict_mismatch(saved: dict, expected: dict) -> tuple[list[str], list[str], list[str]]:
    """The keys of ``expected`` (a model's state dict) that ``saved`` lacks, the keys it has that ``expected``
    does not, and the shared keys whose tensors differ in shape; all empty when it loads strictly."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(saved) & set(expected) if tuple(saved[k].shape) != tuple(expected[k].shape))
    return missing, unexpected, reshaped
