"""Shared datamodule plumbing: splits generated per index from a seed, served as whole batches."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader

from rds_act.data.curriculum import Curriculum
from rds_act.errors import ConfigError

SPLITS = {"train": 0, "val": 1, "test": 2, "ood": 3}
# the splits each evaluation stage serves; its dataloaders come as {split: loader} in this order
EVAL_SPLITS = {"validate": ("val", "ood"), "test": ("test", "ood")}


def named_loaders(loaders: object, stage: str) -> dict[str, object]:
    """A stage's dataloaders by split name. TaskDataModule serves them by name; a datamodule of
    a user's own that serves a list (or one loader) is read in ``EVAL_SPLITS[stage]`` order."""
    if isinstance(loaders, Mapping):
        return dict(loaders)
    if loaders is None:
        return {}
    return dict(zip(EVAL_SPLITS[stage], loaders if isinstance(loaders, (list, tuple)) else [loaders],
                    strict=False))


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one sample: a pure function of (seed, split, index)."""
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose output bits all depend on every input bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_uniforms(seed: int, split: str, index: np.ndarray, n: int) -> np.ndarray:
    """``[len(index), n]`` uniforms in [0, 1) for the batched generators, draw j of sample i a
    pure function of (seed, split, i, j): counter-based (a hash of the key), so a sample does not
    depend on which batch, shard or prefetch makes it, and a whole split is a few array ops
    instead of one Python generator per sample."""
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(int(seed) % 2**64) + _GOLDEN)
        key = _mix(key ^ (np.uint64(SPLITS[split] + 1) * _GOLDEN))
        per_sample = _mix(key ^ np.asarray(index, dtype=np.uint64))
        draws = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix(_mix(per_sample[:, None] + draws))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def uniform_ints(u: np.ndarray, lo: np.ndarray | int, hi: np.ndarray | int) -> np.ndarray:
    """Integers uniform over the inclusive ``lo .. hi`` (per row) from uniforms ``u``."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    return lo + np.minimum((u * (hi - lo + 1)).astype(np.int64), hi - lo)


def first_rows(loader: Iterable, n: int = 2) -> dict | None:
    """The first ``n`` samples of a loader's first batch, for a probe through the model; None
    when it yields no dict batches (a datamodule of a user's own: its own pass will tell)."""
    batch = next(iter(loader), None)
    if not isinstance(batch, dict):
        return None
    return {k: v[:n] if torch.is_tensor(v) else v for k, v in batch.items()}


class TensorDictDataset(torch.utils.data.Dataset):
    """Rows of a dict of equal-length tensors; indexing with a list returns a whole batch at once."""

    def __init__(self, tensors: dict[str, Tensor]):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


class Prefetch:
    """The next epoch's fresh training samples, generated in a forked process while this epoch
    trains (the generators are per-sample Python, on the training loop's path). The split is
    a pure function of (seed, split, indices, level), so what comes back equals what the
    datamodule would make itself; a result for another (epoch, level) is never used. Where
    ``fork`` is not available the datamodule generates in-process."""

    def __init__(self):
        self.key: tuple | None = None
        self.proc = self.conn = None

    @staticmethod
    def available() -> bool:
        return "fork" in multiprocessing.get_all_start_methods()

    def start(self, key: tuple, make) -> None:
        self.stop()
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=self._run, args=(make, child), daemon=True)
        self.proc.start()
        child.close()
        self.key = key

    @staticmethod
    def _run(make, conn) -> None:
        # the parent's handlers (Lightning's flags SIGTERM and waits for a batch end) are not
        # this copy's: SIGTERM ends it, Ctrl-C is the parent's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)
        try:  # plain pickle, by value: torch's shared-memory handles die with this process
            conn.send_bytes(pickle.dumps(("ok", make())))
        except BaseException as exc:  # noqa: BLE001 - the parent re-raises it where it waits
            try:
                conn.send_bytes(pickle.dumps(("error", exc)))
            except Exception:  # noqa: BLE001 - an exception that does not pickle: the parent
                pass  # makes the split itself and meets it there
        finally:
            conn.close()
            os._exit(0)  # no atexit handlers of the parent (loggers, Hydra) in the copy

    def take(self, key: tuple):
        """The prefetched split for ``key``, or None (none started for it, or it died)."""
        if self.key != key or self.conn is None:
            self.stop()
            return None
        try:
            status, value = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError):
            status, value = "error", None
        self.stop()
        if status == "error":
            if isinstance(value, Exception):
                raise value
            return None
        return value

    def stop(self) -> None:
        """End the worker: its result unread (a curriculum promotion made it stale) or read."""
        if self.conn is not None:
            self.conn.close()  # a worker blocked writing a large split gets EPIPE
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join()
        self.proc = self.conn = self.key = None


class TaskDataModule(LightningDataModule):
    """Base datamodule: subclasses implement ``make_sample(rng, split) -> dict`` of numpy arrays,
    and may add ``make_batch(index, split)``, the whole split at once from ``sample_uniforms``
    (used when ``batched``; a different stream of the same distribution).

    Every batch carries ``index`` and ``steps_required``. Validation serves [val, ood] and test
    serves [test, ood]. With ``fresh_train`` each epoch trains on new samples (indices
    ``epoch * n_train + i``; needs the trainer's ``reload_dataloaders_every_n_epochs=1``), so a
    small model cannot pass by memorising a fixed training set.

    Subclasses also name their difficulty range per split (``difficulty_range``) and draw each
    sample's difficulty with ``draw_difficulty``; ``curriculum`` (a dict of ``Curriculum``
    arguments, or None) then narrows the training range to the easy end and widens it as the
    model masters it.
    """

    name = "task"

    # whether ``curriculum.mix`` works: it needs each sample's difficulty drawn by
    # ``draw_difficulty`` / ``draw_difficulties`` (a fixed, cached set cannot mix)
    mixes_curriculum = True

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
        curriculum: dict | None = None,
        prefetch: bool = False,
        batched: bool = False,
    ):
        super().__init__()
        if batched and type(self).make_batch is TaskDataModule.make_batch:
            raise ConfigError(
                f"task.datamodule.batched={batched!r}: {type(self).__name__} generates one sample "
                "at a time; allowed: false"
            )
        self.batched = bool(batched)
        sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "n_ood": n_ood,
                 "batch_size": batch_size, "eval_batch_size": eval_batch_size}
        for key, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"task.datamodule.{key}={value} must be a positive integer")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test, "ood": n_ood}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers, self.fresh_train = seed, num_workers, fresh_train
        self.curriculum: Curriculum | None = None
        if curriculum is not None:
            if not hasattr(curriculum, "keys"):
                raise ConfigError(
                    f"task.datamodule.curriculum={curriculum!r} must be null or a mapping with "
                    "start, step, threshold"
                )
            self.curriculum = Curriculum(**curriculum)
            if self.curriculum.mix and not self.mixes_curriculum:
                raise ConfigError(
                    f"task.datamodule.curriculum.mix={self.curriculum.mix} is not supported by "
                    f"task={getattr(self, 'name', type(self).__name__)}: its training set is "
                    "fixed and capped at the level; allowed: 0"
                )
        self._train_key: tuple[int, int | None] = (0, None)
        self.data: dict[str, TensorDictDataset] = {}
        # the next epoch's fresh samples made while this one trains (``Prefetch``)
        self.prefetch = Prefetch() if prefetch and fresh_train and Prefetch.available() else None

    def difficulty_range(self, split: str) -> tuple[int, int]:
        """Inclusive ``(lo, hi)`` of the task's difficulty (its ``steps_required``) per split."""
        raise NotImplementedError

    def draw_difficulty(self, rng: np.random.Generator, split: str) -> int:
        """A difficulty uniform over the split's range (the curriculum's range while training)."""
        lo, hi = self.difficulty_range(split)
        if split == "train" and self.curriculum is not None:
            self.curriculum.clamp(lo, hi)
            if not (self.curriculum.mix and rng.random() < self.curriculum.mix):
                hi = self.curriculum.level
        return int(rng.integers(lo, hi + 1))

    def range_at(self, split: str, level: int | None) -> tuple[int, int]:
        """The split's difficulty range with its top capped at ``level`` (a curriculum's; None
        leaves it whole), never below the range's bottom."""
        lo, hi = self.difficulty_range(split)
        return lo, hi if level is None else max(lo, min(hi, level))

    def promote(self, accuracy: float) -> bool:
        """Report the accuracy on the current training range; True when the range widened."""
        if self.curriculum is None:
            return False
        self.curriculum.clamp(*self.difficulty_range("train"))
        return self.curriculum.update(accuracy)

    @property
    def level(self) -> int | None:
        """The curriculum's current top difficulty (None without a curriculum)."""
        return None if self.curriculum is None else self.curriculum.level

    def state_dict(self) -> dict:
        return {} if self.curriculum is None else {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.curriculum is not None and "curriculum" in state:
            self.curriculum.clamp(*self.difficulty_range("train"))
            self.curriculum.load_state_dict(state["curriculum"])
            self.data.pop("train", None)  # regenerate at the restored level

    def make_sample(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def make_batch(self, index: np.ndarray, split: str) -> dict[str, np.ndarray]:
        """Samples ``index`` of ``split`` at once (arrays with a leading batch axis)."""
        raise NotImplementedError

    def draw_difficulties(self, u: np.ndarray, split: str) -> np.ndarray:
        """``draw_difficulty`` for a batch: one difficulty per uniform in ``u``."""
        lo, hi = self.difficulty_range(split)
        if split == "train" and self.curriculum is not None:
            self.curriculum.clamp(lo, hi)
            mix = self.curriculum.mix
            if not mix:
                return uniform_ints(u, lo, self.curriculum.level)
            whole = u < mix  # one uniform picks the range and, rescaled, the difficulty in it
            u = np.where(whole, u / mix, (u - mix) / (1 - mix))
            return uniform_ints(u, lo, np.where(whole, hi, self.curriculum.level))
        return uniform_ints(u, lo, hi)

    def make_split(self, split: str, n: int | None = None, start: int = 0) -> dict[str, Tensor]:
        """Samples ``start .. start+n-1`` of ``split`` (deterministic in seed, split and index)."""
        n = self.sizes[split] if n is None else n
        if self.batched:
            made = self.make_batch(np.arange(start, start + n), split)
            out = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in made.items()}
            out["index"] = torch.arange(start, start + n)
            return out
        index = range(start, start + n)
        rows = [self.make_sample(sample_rng(self.seed, split, i), split) for i in index]
        out = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
        out["index"] = torch.arange(start, start + n)
        return out

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.data:
                self.data[split] = TensorDictDataset(self.make_split(split))
                if split == "train":
                    self._train_key = (0, self.level)

    def _rank(self) -> tuple[int, int]:
        """(this process's rank, number of processes) under DDP; (0, 1) otherwise."""
        trainer = self.trainer
        return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))

    def _loader(self, split: str, shuffle: bool, epoch: int = 0) -> DataLoader:
        """Batches of ``split``; under DDP each process gets its own share of the samples (the
        datamodule splits them itself: Lightning's sampler wrapper would pad the evaluation splits
        with repeated samples and count them twice)."""
        ds = self.data[split]
        size = self.batch_size if shuffle else self.eval_batch_size
        rank, world = self._rank()
        if shuffle:  # the order is a function of (seed, epoch): a resumed run sees the same batches
            order = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
            indices = torch.randperm(len(ds), generator=order).tolist()
            # equal shares, so no process waits on a gradient sync the others never reach
            indices = indices[: len(indices) - len(indices) % world][rank::world]
        else:
            indices = list(range(len(ds)))[rank::world]
        sampler = BatchSampler(indices, size, drop_last=False)
        return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        reload = getattr(self.trainer, "reload_dataloaders_every_n_epochs", 1)
        if self.fresh_train and reload != 1:
            raise ConfigError(
                f"trainer.reload_dataloaders_every_n_epochs={reload} with "
                "task.datamodule.fresh_train=true would train on one epoch's samples for good; "
                "allowed: 1 (or set fresh_train=false)"
            )
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        key = (epoch if self.fresh_train else 0, self.level)
        if key != self._train_key or "train" not in self.data:
            n = self.sizes["train"]
            made = self.prefetch.take(key) if self.prefetch is not None else None
            if made is None:
                made = self.make_split("train", n, key[0] * n)
            self.data["train"] = TensorDictDataset(made)
            self._train_key = key
            if self.prefetch is not None and self.trainer is not None \
                    and epoch + 1 < (getattr(self.trainer, "max_epochs", None) or 0):
                nxt = (key[0] + 1, key[1])  # the same level: a promotion discards it
                self.prefetch.start(nxt, lambda: self.make_split("train", n, nxt[0] * n))
        return self._loader("train", True, epoch)

    def teardown(self, stage: str) -> None:
        if self.prefetch is not None:
            self.prefetch.stop()

    def val_dataloader(self) -> dict[str, DataLoader]:
        return {split: self._loader(split, False) for split in EVAL_SPLITS["validate"]}

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def test_dataloader(self) -> dict[str, DataLoader]:
        return {split: self._loader(split, False) for split in EVAL_SPLITS["test"]}
