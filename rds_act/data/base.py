"""Shared datamodule plumbing: splits generated per index from a seed, served as whole batches."""

from __future__ import annotations

import numpy as np
import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from rds_act.errors import ConfigError

SPLITS = {"train": 0, "val": 1, "test": 2, "ood": 3}


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one sample: a pure function of (seed, split, index)."""
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


class TensorDictDataset(torch.utils.data.Dataset):
    """Rows of a dict of equal-length tensors; indexing with a list returns a whole batch at once."""

    def __init__(self, tensors: dict[str, Tensor]):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


class TaskDataModule(LightningDataModule):
    """Base datamodule: subclasses implement ``make_sample(rng, split) -> dict`` of numpy arrays.

    Every batch carries ``index`` and ``steps_required``. Validation serves [val, ood] and test
    serves [test, ood]. With ``fresh_train`` each epoch trains on new samples (indices
    ``epoch * n_train + i``; needs the trainer's ``reload_dataloaders_every_n_epochs=1``), so a
    small model cannot pass by memorising a fixed training set.
    """

    name = "task"

    def __init__(
        self,
        n_train: int = 8000,
        n_val: int = 1000,
        n_test: int = 1000,
        n_ood: int = 1000,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        seed: int = 0,
        num_workers: int = 0,
        fresh_train: bool = True,
    ):
        super().__init__()
        sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "n_ood": n_ood,
                 "batch_size": batch_size, "eval_batch_size": eval_batch_size}
        for key, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"task.datamodule.{key}={value} must be a positive integer")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test, "ood": n_ood}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers, self.fresh_train = seed, num_workers, fresh_train
        self._train_epoch = 0
        self.data: dict[str, TensorDictDataset] = {}

    def make_sample(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def make_split(self, split: str, n: int | None = None, start: int = 0) -> dict[str, Tensor]:
        """Samples ``start .. start+n-1`` of ``split`` (deterministic in seed, split and index)."""
        n = self.sizes[split] if n is None else n
        index = range(start, start + n)
        rows = [self.make_sample(sample_rng(self.seed, split, i), split) for i in index]
        out = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
        out["index"] = torch.arange(start, start + n)
        return out

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.data:
                self.data[split] = TensorDictDataset(self.make_split(split))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.data[split]
        size = self.batch_size if shuffle else self.eval_batch_size
        base = RandomSampler(ds) if shuffle else SequentialSampler(ds)
        sampler = BatchSampler(base, size, drop_last=False)
        return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self.fresh_train and epoch != self._train_epoch:
            n = self.sizes["train"]
            self.data["train"] = TensorDictDataset(self.make_split("train", n, epoch * n))
            self._train_epoch = epoch
        return self._loader("train", True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader("val", False), self._loader("ood", False)]

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader("test", False), self._loader("ood", False)]
