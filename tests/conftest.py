import os

import torch

# Triton's interpreter (TRITON_INTERPRET=1) is what runs the Triton kernel on CPU
# (tests/test_triton_kernel.py). It must be chosen before triton is first imported: triton.language's own
# helpers (tl.sum, ...) are built compiled or interpreted at that moment, for the whole process, and
# lightning and torch.export import triton. So it is set here, before anything imports triton, and only
# where there is no CUDA device: there it touches nothing but impl="triton" (inductor's CPU backend does
# not use Triton), and on a GPU machine the kernels stay compiled for the gpu-marked tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402


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
