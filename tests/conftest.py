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


@pytest.fixture
def budget_config(tmp_path):
    """Writes a config file that sets the trainer's own budget (``budget_config(max_epochs=2)`` -> its path).

    Passed as a second ``-c``, it makes a short run *complete* for its config (so it writes
    reports/<name>/ and studies read it), where the same values as ``--trainer.*`` overrides would
    mark the run shortened."""

    def write(**trainer) -> str:
        path = tmp_path / f"budget_{len(list(tmp_path.glob('budget_*.yaml')))}.yaml"
        path.write_text("trainer:\n" + "".join(f"  {key}: {value}\n" for key, value in trainer.items()))
        return str(path)

    return write
