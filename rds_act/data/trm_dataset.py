"""Puzzle datasets as TinyRecursiveModels and HRM build them (Sudoku-Extreme, Maze-30x30-Hard, ARC),
read in place from the directory their own ``dataset/build_*_dataset.py`` scripts write.

The format (TRM's ``dataset/common.py`` and ``puzzle_dataset.py``; HRM's is the same, less the
``total_puzzles`` field)::

    <data_dir>/train/dataset.json      metadata: pad_id, ignore_label_id, blank_identifier_id,
    <data_dir>/test/dataset.json       vocab_size, seq_len, num_puzzle_identifiers, total_groups,
                                       mean_puzzle_examples, sets (e.g. ["all"]), [total_puzzles]
    <split>/<set>__inputs.npy          [examples, seq_len] tokens, stored +1 (0 = pad)
    <split>/<set>__labels.npy          [examples, seq_len]; ignore_label_id marks no-loss cells
    <split>/<set>__puzzle_identifiers.npy  [puzzles] one identifier per puzzle (0 = blank)
    <split>/<set>__puzzle_indices.npy  [puzzles + 1] each puzzle's first example, then the count
    <split>/<set>__group_indices.npy   [groups + 1] each group's first puzzle, then the count

A batch serves ``x`` (the input tokens as stored), ``y`` (the labels as stored, so the classes are
``0 .. vocab_size - 1``, with the ``ignore_label_id`` cells set to ``ignore_index``), ``puzzle_id``
(the example's puzzle identifier), ``index`` (its row in its split's files, the sets in
``dataset.json`` order), ``steps_required`` (0: unknown) and ``difficulty`` (the answer cells whose
label differs from the input token: blanks to fill in Sudoku, path cells in a maze).

Every split is memory-mapped: nothing is read until a batch asks for its rows, so the full
augmented sets (a million Sudoku grids, ARC's thousand-fold augmentations) cost no memory up front.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rds_act.data.base import SPLITS, TaskDataModule
from rds_act.errors import ConfigError, is_positive_int

ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# the fields of TRM's / HRM's PuzzleDatasetMetadata this reader uses or checks (total_puzzles,
# TRM's only, is checked where present)
FIELDS: dict[str, tuple[type, ...]] = {
    "pad_id": (int,), "ignore_label_id": (int, type(None)), "blank_identifier_id": (int,),
    "vocab_size": (int,), "seq_len": (int,), "num_puzzle_identifiers": (int,),
    "total_groups": (int,), "mean_puzzle_examples": (int, float), "sets": (list,),
}
# the evaluation subsets are the same examples in every run (seed or not): runs stay comparable
EVAL_SUBSET_KEY = 20240531


def read_metadata(split_dir: Path) -> dict:
    """``<split_dir>/dataset.json`` with its fields checked, or one error line naming the flaw."""
    path = split_dir / "dataset.json"
    if not path.is_file():
        raise ConfigError(f"{path} is missing; a TRM/HRM dataset directory has train/ and test/, "
                          "each with dataset.json (built by their dataset/build_*_dataset.py)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} is not a JSON object of dataset metadata")
    for field, types in FIELDS.items():
        if field not in meta:
            raise ConfigError(f"{path} has no field {field!r} (TRM/HRM PuzzleDatasetMetadata)")
        value = meta[field]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ConfigError(f"{path}: {field}={value!r} is not a valid {field}")
    if not meta["sets"] or not all(isinstance(s, str) and s for s in meta["sets"]):
        raise ConfigError(f"{path}: sets={meta['sets']!r} must be a non-empty list of set names")
    for field in ("vocab_size", "seq_len"):
        if meta[field] < 1:
            raise ConfigError(f"{path}: {field}={meta[field]} must be >= 1")
    return meta


def load_array(path: Path, ndim: int, mmap: bool) -> np.ndarray:
    """One integer ``.npy`` array (memory-mapped with ``mmap``), or one error line naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path} is missing (the dataset's dataset.json lists its set)")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is not a readable .npy array ({reason})") from None
    if not isinstance(array, np.ndarray):  # np.load returns an NpzFile for a .npz
        raise ConfigError(f"{path} is not a .npy array")
    if array.dtype.kind not in "iu":
        raise ConfigError(f"{path} holds {array.dtype}, not integers")
    if array.ndim != ndim:
        raise ConfigError(f"{path} has shape {tuple(array.shape)}; expected {ndim} dimension(s)")
    return array


def _check_offsets(path: Path, offsets: np.ndarray, total: int, what: str) -> None:
    """Start offsets (length n + 1): 0 first, non-decreasing, ``total`` last."""
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
        head = offsets[:1].tolist() + (["..."] if offsets.size > 2 else []) + offsets[-1:].tolist()
        raise ConfigError(f"{path} must be non-decreasing start offsets from 0 to the {total} "
                          f"{what}; it holds {head} ({offsets.size} entries)")


class PuzzleSplit:
    """One split directory (``<data_dir>/train`` or ``/test``): its metadata and its sets' arrays,
    the sets concatenated in ``dataset.json`` order."""

    def __init__(self, split_dir: Path):
        self.path = split_dir
        if not split_dir.is_dir():
            raise ConfigError(f"{split_dir} is missing; a TRM/HRM dataset directory has train/ and "
                              "test/ (built by their dataset/build_*_dataset.py)")
        self.meta = meta = read_metadata(split_dir)
        seq_len, n_ids = meta["seq_len"], meta["num_puzzle_identifiers"]
        self.inputs, self.labels, puzzle_ids, self.files = [], [], [], []
        n_groups = n_puzzles = 0
        for name in meta["sets"]:
            files = {key: split_dir / f"{name}__{key}.npy" for key in ARRAYS}
            inputs = load_array(files["inputs"], 2, mmap=True)
            labels = load_array(files["labels"], 2, mmap=True)
            ids = load_array(files["puzzle_identifiers"], 1, mmap=False)
            puzzles = load_array(files["puzzle_indices"], 1, mmap=False)
            groups = load_array(files["group_indices"], 1, mmap=False)
            if inputs.shape[1] != seq_len:
                raise ConfigError(f"{files['inputs']} has {inputs.shape[1]} cells per example but "
                                  f"{split_dir / 'dataset.json'} says seq_len={seq_len}")
            if labels.shape != inputs.shape:
                raise ConfigError(f"{files['labels']} has shape {tuple(labels.shape)} but "
                                  f"{files['inputs'].name} has {tuple(inputs.shape)}")
            if len(puzzles) != len(ids) + 1:
                raise ConfigError(f"{files['puzzle_indices']} has {len(puzzles)} entries; expected "
                                  f"{len(ids) + 1} (one per puzzle in {files['puzzle_identifiers'].name}, "
                                  "plus the end)")
            _check_offsets(files["puzzle_indices"], puzzles, len(inputs), "examples")
            _check_offsets(files["group_indices"], groups, len(ids), "puzzles")
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n_ids):
                raise ConfigError(f"{files['puzzle_identifiers']} holds identifiers "
                                  f"{int(ids.min())}..{int(ids.max())}, outside 0..{n_ids - 1} "
                                  f"(num_puzzle_identifiers={n_ids})")
            self.inputs.append(inputs)
            self.labels.append(labels)
            self.files.append(files)
            puzzle_ids.append(np.repeat(ids.astype(np.int64), np.diff(puzzles)))
            n_groups += len(groups) - 1
            n_puzzles += len(ids)
        for field, count in (("total_groups", n_groups), ("total_puzzles", n_puzzles)):
            if field in meta and meta[field] != count:
                raise ConfigError(f"{split_dir / 'dataset.json'} says {field}={meta[field]} but the "
                                  f"arrays hold {count}; the directory mixes files of two builds")
        self.puzzle_id = np.concatenate(puzzle_ids)
        self.offsets = np.cumsum([0] + [len(a) for a in self.inputs])
        if len(self) == 0:
            raise ConfigError(f"{split_dir} holds no examples")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and labels [len(index), seq_len] (int64) of the examples ``index``; a token
        outside the vocabulary is one error line naming its file."""
        which = np.searchsorted(self.offsets, index, side="right") - 1
        x = np.empty((len(index), self.meta["seq_len"]), dtype=np.int64)
        y = np.empty_like(x)
        vocab, ignore = self.meta["vocab_size"], self.meta["ignore_label_id"]
        for s in np.unique(which):
            pick = which == s
            local = index[pick] - self.offsets[s]
            x[pick], y[pick] = self.inputs[s][local], self.labels[s][local]
            for key, values in (("inputs", x[pick]), ("labels", y[pick])):
                if key == "labels" and ignore is not None:
                    values = values[values != ignore]
                if values.size and (values.min() < 0 or values.max() >= vocab):
                    bad = int(values.max()) if values.max() >= vocab else int(values.min())
                    raise ConfigError(f"{self.files[s][key]} holds token {bad}, outside "
                                      f"0..{vocab - 1} (vocab_size in {self.path / 'dataset.json'})")
        return x, y


class PuzzleRows(Dataset):
    """The examples ``rows`` of a split; indexing with a list returns a whole batch at once."""

    def __init__(self, source: PuzzleSplit, rows: np.ndarray, ignore_index: int):
        self.source, self.rows, self.ignore_index = source, np.asarray(rows, dtype=np.int64), ignore_index

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> dict[str, Tensor]:
        index = self.rows[np.atleast_1d(np.asarray(idx, dtype=np.int64))]
        x, labels = self.source.rows(index)
        ignore = self.source.meta["ignore_label_id"]
        # as TRM: only ignore_label_id marks cells without loss (null: every cell counts)
        valid = labels != ignore if ignore is not None else np.ones(labels.shape, dtype=bool)
        y = np.where(valid, labels, self.ignore_index)
        batch = {
            "x": torch.from_numpy(x), "y": torch.from_numpy(y),
            "puzzle_id": torch.from_numpy(self.source.puzzle_id[index]),
            "index": torch.from_numpy(index),
            "steps_required": torch.zeros(len(index), dtype=torch.int64),
            "difficulty": torch.from_numpy(((x != labels) & valid).sum(1).astype(np.int64)),
        }
        if np.ndim(idx) == 0:  # one sample, not a batch
            batch = {k: v[0] for k, v in batch.items()}
        return batch


class TRMDatasetModule(TaskDataModule):
    """A dataset directory built by TinyRecursiveModels' (or HRM's) ``dataset/build_*_dataset.py``.

    Splits: train = ``<data_dir>/train``; val and test = ``<data_dir>/test`` (the builds have no
    validation set: val is a fixed subset of ``n_val`` test examples, the same in every run, and
    the best checkpoint is picked on it, so the test score is not blind to model selection);
    ood = the test set of ``ood_dir`` (another build of the same shape), or ``<data_dir>/test``
    again when ``ood_dir`` is null. A size of null means the whole split; a smaller one a fixed
    subset. An epoch trains on all training examples (or a fixed ``n_train`` of them); with
    ``fresh_train`` each epoch takes the next ``n_train`` of a fixed shuffle of the training set,
    wrapping round, so a big set (Sudoku-Extreme's million grids) is validated more often than
    once per pass.

    ``height``, ``width``, ``vocab_size`` and ``num_puzzle_identifiers`` size the model at compose
    time; they are checked against ``dataset.json`` and a mismatch is one error line that names
    the values for this dataset.
    """

    name = "trm_dataset"

    def __init__(
        self, data_dir: str | None = None, ood_dir: str | None = None, height: int = 9,
        width: int = 9, vocab_size: int = 11, num_puzzle_identifiers: int = 1,
        ignore_index: int = -100, n_train: int | None = None, n_val: int | None = 1000,
        n_test: int | None = None, n_ood: int | None = 1000, fresh_train: bool = False, **kwargs,
    ):
        if not data_dir:
            raise ConfigError("task.datamodule.data_dir is not set; point it at a directory built by "
                              "TinyRecursiveModels' or HRM's dataset/build_*_dataset.py "
                              "(it holds train/ and test/)")
        root = Path(str(data_dir)).expanduser()
        if not root.is_dir():
            raise ConfigError(f"task.datamodule.data_dir={str(data_dir)!r} is not a directory")
        train, test = PuzzleSplit(root / "train"), PuzzleSplit(root / "test")
        ood = test
        if ood_dir:
            ood_root = Path(str(ood_dir)).expanduser()
            if not ood_root.is_dir():
                raise ConfigError(f"task.datamodule.ood_dir={str(ood_dir)!r} is not a directory")
            ood = PuzzleSplit(ood_root / "test")
        self.sources = {"train": train, "val": test, "test": test, "ood": ood}
        self.height, self.width, self.vocab_size = height, width, vocab_size
        self.num_puzzle_identifiers, self.ignore_index = num_puzzle_identifiers, int(ignore_index)
        self._check_shape(train, test, ood)
        given = {"train": n_train, "val": n_val, "test": n_test, "ood": n_ood}
        sizes = {}
        for split, n in given.items():
            total = len(self.sources[split])
            if n is not None and (not is_positive_int(n)):
                raise ConfigError(f"task.datamodule.n_{split}={n!r} must be a positive integer or "
                                  "null (the whole split)")
            if split == "train" and n is not None and n > total:
                raise ConfigError(f"task.datamodule.n_train={n} exceeds the {total} training examples "
                                  f"in {train.path}; allowed: 1..{total}, or null (all)")
            # an evaluation split smaller than asked is served whole
            sizes[split] = total if n is None else min(n, total)
        kwargs.setdefault("curriculum", None)
        if kwargs["curriculum"] is not None:
            raise ConfigError("task.datamodule.curriculum must be null for task=trm_dataset: a "
                              "built dataset has no difficulty range to widen")
        super().__init__(n_train=sizes["train"], n_val=sizes["val"], n_test=sizes["test"],
                         n_ood=sizes["ood"], fresh_train=fresh_train, **kwargs)
        n = len(train)
        self._train_order = (np.random.default_rng([int(self.seed), SPLITS["train"]]).permutation(n)
                             if sizes["train"] < n or fresh_train else np.arange(n))

    def _check_shape(self, train: PuzzleSplit, test: PuzzleSplit, ood: PuzzleSplit) -> None:
        meta = train.meta
        for other in (test, ood):
            for field in ("seq_len", "vocab_size", "pad_id", "ignore_label_id"):
                if other.meta[field] != meta[field]:
                    raise ConfigError(f"{other.path / 'dataset.json'} has {field}={other.meta[field]} "
                                      f"but {train.path / 'dataset.json'} has {meta[field]}")
            top = int(other.puzzle_id.max(initial=0))
            if top >= meta["num_puzzle_identifiers"]:
                raise ConfigError(f"{other.path} uses puzzle identifiers up to {top}, beyond the "
                                  f"num_puzzle_identifiers={meta['num_puzzle_identifiers']} of "
                                  f"{train.path / 'dataset.json'}; allowed: splits of one build")
        seq_len, side = meta["seq_len"], math.isqrt(meta["seq_len"])
        want = {"vocab_size": meta["vocab_size"], "num_puzzle_identifiers": meta["num_puzzle_identifiers"]}
        if side * side == seq_len:
            want = {"height": side, "width": side, **want}
        have = {"height": self.height, "width": self.width, "vocab_size": self.vocab_size,
                "num_puzzle_identifiers": self.num_puzzle_identifiers}
        for key, value in have.items():
            if not is_positive_int(value):
                raise ConfigError(f"task.datamodule.{key}={value!r} must be an integer >= 1")
        wrong = [k for k, v in want.items() if have[k] != v]
        if self.height * self.width != seq_len:
            wrong = ["height", "width", *[k for k in wrong if k not in ("height", "width")]]
        if wrong:
            fix = " ".join(f"task.datamodule.{k}={v}" for k, v in want.items())
            if side * side != seq_len:
                fix += f" and task.datamodule.height, width with height*width={seq_len}"
            now = ", ".join(f"{k}={have[k]}" for k in wrong)
            raise ConfigError(f"task.datamodule {now} do not fit {train.path / 'dataset.json'} "
                              f"(seq_len={seq_len}, vocab_size={meta['vocab_size']}, "
                              f"num_puzzle_identifiers={meta['num_puzzle_identifiers']}); for this "
                              f"dataset set {fix}")

    def split_rows(self, split: str, epoch: int = 0) -> np.ndarray:
        """Which rows of its split's files ``split`` serves (in ``epoch`` for train)."""
        n, total = self.sizes[split], len(self.sources[split])
        if split == "train":
            if self.fresh_train:
                return self._train_order[(np.arange(n) + epoch * n) % total]
            return np.sort(self._train_order[:n])
        if n >= total:
            return np.arange(total)
        rng = np.random.default_rng([EVAL_SUBSET_KEY, SPLITS[split]])
        return np.sort(rng.choice(total, n, replace=False))

    def make_split(self, split: str, n: int | None = None, start: int = 0) -> dict[str, Tensor]:
        """Examples ``start .. start+n-1`` of the split's rows as one batch (scripts, probes);
        training itself reads the memory-mapped files batch by batch."""
        rows = self.split_rows(split)
        n = len(rows) - start if n is None else n
        if not 0 <= start <= start + n <= len(rows):
            raise ConfigError(f"{split} has {len(rows)} examples; asked for {start}..{start + n - 1}")
        return PuzzleRows(self.sources[split], rows, self.ignore_index)[list(range(start, start + n))]

    def _rows(self, split: str, epoch: int = 0) -> PuzzleRows:
        return PuzzleRows(self.sources[split], self.split_rows(split, epoch), self.ignore_index)

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.data:
                self.data[split] = self._rows(split)
        self._train_key = (0, None)

    def train_dataloader(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        key = (epoch if self.fresh_train else 0, None)
        if key != self._train_key or "train" not in self.data:
            self.data["train"] = self._rows("train", key[0])
            self._train_key = key  # the base's loader then serves these rows as they are
        return super().train_dataloader()
