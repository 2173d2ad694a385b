"""task=trm_dataset: a directory in TinyRecursiveModels' / HRM's built format, read as they write it.

The fixture writes that format itself (the layout, dtypes and metadata of TRM's
dataset/build_sudoku_dataset.py and build_arc_dataset.py): 4x4 Sudoku-like grids, tokens stored +1
(0 = pad, 1 = blank, 2..5 the digits), several examples per puzzle and several puzzles per group,
some label cells 0 (ignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import run_cli

from rds_act.data.trm_dataset import TRMDatasetModule
from rds_act.errors import ConfigError

VOCAB, SEQ = 6, 16
BASE = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])


def write_split(split_dir: Path, groups: int, puzzles_per_group: int, examples: int,
                first_id: int, num_ids: int, seed: int, sets: tuple[str, ...] = ("all",)) -> dict:
    """One split as TRM's builders save it; returns what was written (per set) for the checks."""
    rng = np.random.default_rng(seed)
    split_dir.mkdir(parents=True)
    written = {}
    total_groups = total_puzzles = total_examples = 0
    for name in sets:
        inputs, labels, ids, puzzle_indices, group_indices = [], [], [], [0], [0]
        for _ in range(groups):
            for _ in range(puzzles_per_group):
                for _ in range(examples):
                    solution = rng.permutation(4)[BASE - 1] + 1  # a digit relabelling: still valid
                    puzzle = solution.copy()
                    puzzle[rng.random((4, 4)) < 0.5] = 0  # blanks
                    label = solution.flatten() + 1
                    if rng.random() < 0.5:
                        label[rng.random(SEQ) < 0.25] = 0  # cells without loss (pad)
                    inputs.append(puzzle.flatten() + 1)
                    labels.append(label)
                puzzle_indices.append(len(inputs))
                ids.append(first_id + len(ids) % (num_ids - first_id))
            group_indices.append(len(ids))
        arrays = {
            "inputs": np.array(inputs, dtype=np.uint8), "labels": np.array(labels, dtype=np.uint8),
            "puzzle_identifiers": np.array(ids, dtype=np.int32),
            "puzzle_indices": np.array(puzzle_indices, dtype=np.int32),
            "group_indices": np.array(group_indices, dtype=np.int32),
        }
        for key, value in arrays.items():
            np.save(split_dir / f"{name}__{key}.npy", value)
        written[name] = arrays
        total_groups += groups
        total_puzzles += len(ids)
        total_examples += len(inputs)
    meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": VOCAB,
            "seq_len": SEQ, "num_puzzle_identifiers": num_ids, "total_groups": total_groups,
            "mean_puzzle_examples": total_examples / total_puzzles, "total_puzzles": total_puzzles,
            "sets": list(sets)}
    (split_dir / "dataset.json").write_text(json.dumps(meta))
    return written


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """24 training examples (3 groups x 2 puzzles x 4), 9 test examples (3 puzzles x 3)."""
    root = tmp_path / "sudoku4"
    write_split(root / "train", groups=3, puzzles_per_group=2, examples=4, first_id=1, num_ids=7, seed=0)
    write_split(root / "test", groups=3, puzzles_per_group=1, examples=3, first_id=1, num_ids=7, seed=1)
    return root


def module(root: Path, **kwargs) -> TRMDatasetModule:
    args = {"height": 4, "width": 4, "vocab_size": VOCAB, "num_puzzle_identifiers": 7,
            "n_val": 4, "batch_size": 5, "eval_batch_size": 4, **kwargs}
    return TRMDatasetModule(data_dir=str(root), **args)


def expected_rows(arrays: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, puzzle_id) per example, y with the 0 labels as -100: computed row by row."""
    x = arrays["inputs"].astype(np.int64)
    y = np.where(arrays["labels"] == 0, -100, arrays["labels"].astype(np.int64))
    starts = arrays["puzzle_indices"]
    puzzle = [next(p for p in range(len(starts) - 1) if starts[p] <= i < starts[p + 1])
              for i in range(len(x))]
    return x, y, arrays["puzzle_identifiers"][puzzle].astype(np.int64)


def gather(loader) -> dict[str, np.ndarray]:
    batches = list(loader)
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}


def test_batches_serve_the_files_as_stored(data_dir):
    dm = module(data_dir)
    dm.setup()
    assert {s: len(dm.data[s]) for s in ("train", "val", "test", "ood")} == {
        "train": 24, "val": 4, "test": 9, "ood": 9}
    for split, loader in [("train", dm.train_dataloader()), ("val", dm.val_dataloader()["val"]),
                          ("ood", dm.val_dataloader()["ood"]), ("test", dm.test_dataloader()["test"])]:
        arrays = {k: np.load(data_dir / ("train" if split == "train" else "test") / f"all__{k}.npy")
                  for k in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices")}
        x, y, pid = expected_rows(arrays)
        got = gather(loader)
        rows = got["index"]
        assert got["x"].dtype == got["y"].dtype == np.int64
        np.testing.assert_array_equal(got["x"], x[rows])  # tokens as stored (+1, 0 = pad)
        np.testing.assert_array_equal(got["y"], y[rows])  # labels as stored, pad -> ignore_index
        np.testing.assert_array_equal(got["puzzle_id"], pid[rows])
        np.testing.assert_array_equal(got["steps_required"], 0)
        raw = arrays["labels"][rows]
        np.testing.assert_array_equal(got["difficulty"], ((x[rows] != raw) & (raw != 0)).sum(1))
        assert (got["y"] == -100).any() and got["y"].max() < VOCAB
        full = {"train": 24, "val": 4, "test": 9, "ood": 9}[split]
        assert len(rows) == len(set(rows.tolist())) == full
    assert np.load(data_dir / "test" / "all__inputs.npy").dtype == np.uint8  # TRM's dtypes
    # val: a fixed subset of test/, the same rows whatever the seed
    val = dm.data["val"].rows
    assert set(val.tolist()) <= set(range(9)) and list(val) == sorted(val)
    np.testing.assert_array_equal(module(data_dir, seed=5).split_rows("val"), val)


def test_sets_concatenate_in_dataset_json_order(tmp_path):
    root = tmp_path / "two_sets"
    written = write_split(root / "train", 2, 1, 3, 1, 4, seed=2, sets=("all", "extra"))
    write_split(root / "test", 1, 1, 2, 1, 4, seed=3)
    dm = module(root, num_puzzle_identifiers=4, n_val=2)
    dm.setup()
    got = dm.data["train"][list(range(12))]
    parts = [expected_rows(written[name]) for name in ("all", "extra")]
    np.testing.assert_array_equal(got["x"].numpy(), np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(got["y"].numpy(), np.concatenate([p[1] for p in parts]))
    np.testing.assert_array_equal(got["puzzle_id"].numpy(), np.concatenate([p[2] for p in parts]))


def test_train_sizes_and_fresh_windows(data_dir):
    whole = module(data_dir)
    assert whole.split_rows("train").tolist() == list(range(24))  # an epoch = every example
    part = module(data_dir, n_train=10)
    assert len(set(part.split_rows("train").tolist())) == 10
    fresh = module(data_dir, n_train=10, fresh_train=True)
    epochs = [fresh.split_rows("train", e) for e in range(3)]
    assert not set(epochs[0]) & set(epochs[1])  # the next 10 of one shuffle, wrapping round
    assert len(set(np.concatenate(epochs).tolist())) == 24
    fresh.setup()
    for epoch in (0, 1):
        fresh.trainer = SimpleNamespace(reload_dataloaders_every_n_epochs=1, current_epoch=epoch,
                                        global_rank=0, world_size=1)
        assert sorted(gather(fresh.train_dataloader())["index"]) == sorted(epochs[epoch])
    with pytest.raises(ConfigError, match=r"n_train=25 exceeds the 24 training examples"):
        module(data_dir, n_train=25)


def test_ddp_shares_cover_each_split_once(data_dir):
    dm = module(data_dir)
    dm.setup()
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0,
                                     reload_dataloaders_every_n_epochs=1)
        seen.append(gather(dm.test_dataloader()["test"])["index"])
    assert sorted(np.concatenate(seen).tolist()) == list(range(9))


def test_shape_mismatch_names_the_values_for_the_dataset(data_dir):
    with pytest.raises(ConfigError, match=r"height=9, width=9 do not fit .*dataset.json.* set "
                       r"task.datamodule.height=4 task.datamodule.width=4 task.datamodule.vocab_size=6 "
                       r"task.datamodule.num_puzzle_identifiers=7$"):
        module(data_dir, height=9, width=9)
    with pytest.raises(ConfigError, match=r"vocab_size=11 do not fit"):
        module(data_dir, vocab_size=11)


def corrupt(root: Path, how: str) -> str:
    """Break the directory one way; returns what the error line must name."""
    test = root / "test"
    if how == "no dir":
        return str(root / "nope")
    if how == "no file":
        (test / "all__puzzle_indices.npy").unlink()
        return "all__puzzle_indices.npy is missing"
    if how == "no field":
        meta = json.loads((test / "dataset.json").read_text())
        del meta["seq_len"]
        (test / "dataset.json").write_text(json.dumps(meta))
        return "has no field 'seq_len'"
    if how == "lengths":
        np.save(test / "all__labels.npy", np.load(test / "all__labels.npy")[:-1])
        return "all__labels.npy has shape (8, 16) but all__inputs.npy has (9, 16)"
    if how == "offsets":
        np.save(test / "all__puzzle_indices.npy", np.array([0, 3, 6, 8], dtype=np.int32))
        return "all__puzzle_indices.npy must be non-decreasing start offsets from 0 to the 9 examples"
    if how == "garbage":
        (test / "all__inputs.npy").write_bytes(b"not a numpy file at all")
        return "all__inputs.npy is not a readable .npy array"
    if how == "truncated":
        path = test / "all__labels.npy"
        path.write_bytes(path.read_bytes()[:-40])
        return "all__labels.npy is not a readable .npy array"
    if how == "floats":
        np.save(test / "all__inputs.npy", np.load(test / "all__inputs.npy").astype(np.float32))
        return "all__inputs.npy holds float32, not integers"
    raise AssertionError(how)


BREAKS = ["no dir", "no file", "no field", "lengths", "offsets", "garbage", "truncated", "floats"]


@pytest.mark.parametrize("how", BREAKS)
def test_a_broken_directory_is_one_error_naming_it(data_dir, how):
    needle = corrupt(data_dir, how)
    root = data_dir / "nope" if how == "no dir" else data_dir
    with pytest.raises(ConfigError) as caught:
        module(root)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_token_outside_the_vocabulary_names_its_file(data_dir):
    labels = np.load(data_dir / "train" / "all__labels.npy")
    labels[5, 3] = VOCAB
    np.save(data_dir / "train" / "all__labels.npy", labels)
    dm = module(data_dir)
    dm.setup()
    with pytest.raises(ConfigError, match=r"train/all__labels.npy holds token 6, outside 0..5"):
        dm.data["train"][list(range(24))]


def test_unset_data_dir_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="task.datamodule.data_dir is not set"):
        TRMDatasetModule()


SMALL = ["task=trm_dataset", "task.datamodule.height=4", "task.datamodule.width=4",
         "task.datamodule.vocab_size=6", "task.datamodule.num_puzzle_identifiers=7",
         "task.datamodule.n_val=4", "task.datamodule.batch_size=8", "task.datamodule.eval_batch_size=8",
         "model.d_model=32", "trainer.max_epochs=1", "logger=none", "callbacks=none"]


def test_training_runs_on_the_directory(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("rds_act.train", [*SMALL, f"task.datamodule.data_dir={data_dir}", f"hydra.run.dir={run}"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    for key in ("test/acc", "test/cell_acc", "val/acc", "ood/acc"):
        assert key in metrics and metrics[key] is not None and 0 <= metrics[key] <= 1, key


@pytest.mark.parametrize("how", ["no file", "no field"])
def test_a_partial_directory_exits_2_with_one_error_line(data_dir, tmp_path, how):
    needle = corrupt(data_dir, how)
    run = tmp_path / "run"
    proc = run_cli("rds_act.train", [*SMALL, f"task.datamodule.data_dir={data_dir}", f"hydra.run.dir={run}"],
                   tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
