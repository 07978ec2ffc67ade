"""TaskDataModule: what every dataset's LightningDataModule shares, its saved arguments and its DataLoader factory."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset


class TaskDataModule(L.LightningDataModule):
    """Base of the task data modules that read a dataset from ``root`` in ``batch_size`` batches with
    ``num_workers`` worker processes (and predict on ``predict_root`` when given).

    Each subclass keeps its own ``__init__`` signature (the CLI and the YAML configs read it) and
    calls ``super().__init__()`` first: that saves the subclass's arguments as ``self.hparams``.
    ``_loader`` builds every DataLoader from them. Each subclass says what its validation uses
    (``validation_split``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()  # Lightning collects the arguments of the subclass's __init__ too

    @property
    def validation_split(self) -> str | None:
        """What validation evaluates, in words (e.g. "10% of the training images (seed 0), held out of
        training"): the split that chooses the best checkpoint, so a run's record can state its selection
        protocol. It is never the test split; each subclass holds validation out of its training data and
        says so here. None (a subclass that does not say) is recorded as an undescribed split, after
        training, rather than failing the finished fit."""
        return None

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int | None = None,
        *,
        shuffle: bool = False,
        num_workers: int | None = None,
        persistent: bool = True,
        **options,
    ) -> DataLoader:
        """A DataLoader over ``dataset``: ``batch_size`` and ``num_workers`` default to the module's; its
        worker processes, if any, persist between epochs unless ``persistent=False``. ``options``
        (drop_last, pin_memory, collate_fn, sampler, ...) go to DataLoader as they are."""
        workers = self.hparams.num_workers if num_workers is None else num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size if batch_size is None else batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            **options,
        )
