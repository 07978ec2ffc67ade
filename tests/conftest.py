import pytest
import torch
from lightning.pytorch import Callback


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class InterruptAtStep(Callback):
    """Presses Ctrl-C once ``global_step`` reaches ``step``: the resume tests add it through the CLI
    (``--trainer.callbacks+=conftest.InterruptAtStep``)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt
