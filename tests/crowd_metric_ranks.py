"""One rank of the 2-process counting-metric test (tests/test_crowd.py): kept apart so spawned ranks import little."""

import json
from pathlib import Path

import torch

from acda_lightning.metrics import CountMAE, CountRMSE

PREDICTED = torch.tensor([10.0, 3.5, 7.0, 0.0, 12.0, 40.0, 2.0])
TRUE = torch.tensor([12.0, 3.0, 9.0, 1.0, 12.0, 30.0, 2.5])
SHARDS = [[0, 1, 2, 3, 4], [5, 6]]  # uneven: no padded duplicates may enter the sums


def run_rank(rank: int, port: int, out: str) -> None:
    """Update on this rank's shard, one whole image per step as the test loop does; write compute()."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    mae, rmse = CountMAE(), CountRMSE()
    for index in SHARDS[rank]:
        mae.update(PREDICTED[index : index + 1], TRUE[index : index + 1])
        rmse.update(PREDICTED[index : index + 1], TRUE[index : index + 1])
    Path(out, f"rank{rank}.json").write_text(json.dumps([mae.compute().item(), rmse.compute().item()]))
    torch.distributed.destroy_process_group()
