"""task=maze: reasoning-gym mazes labelled with their unique shortest start -> goal path.

The checks here do not reuse the datamodule's BFS: distances come from a numpy flood fill, path
counts from a layer-by-layer sum over it, and the label is walked cell by cell from start."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers import TINY, run_cli

from rds_act.data.maze import GOAL, IGNORE_INDEX, OPEN, PAD, START, WALL, MazeDataModule, shortest_path
from rds_act.errors import ConfigError

pytest.importorskip("reasoning_gym")

SPLITS = ("train", "val", "test", "ood")
N = 24  # samples checked per split


def flood(free: np.ndarray, source: tuple[int, int]) -> np.ndarray:
    """BFS distances over ``free`` cells by repeated 4-neighbour dilation (-1: unreachable)."""
    dist = np.full(free.shape, -1)
    front = np.zeros(free.shape, dtype=bool)
    front[source] = True
    d = 0
    while front.any():
        dist[front] = d
        grown = np.zeros_like(front)
        grown[1:] |= front[:-1]
        grown[:-1] |= front[1:]
        grown[:, 1:] |= front[:, :-1]
        grown[:, :-1] |= front[:, 1:]
        front = grown & free & (dist < 0)
        d += 1
    return dist


def count_shortest(free: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> int:
    """The number of shortest paths source -> target: each layer's counts summed from the last."""
    dist = flood(free, source)
    count = np.zeros(free.shape, dtype=object)
    count[source] = 1
    for d in range(1, int(dist[target]) + 1):
        for r, c in zip(*np.nonzero(dist == d), strict=True):
            count[r, c] = sum(count[a, b] for a, b in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                              if 0 <= a < free.shape[0] and 0 <= b < free.shape[1] and dist[a, b] == d - 1)
    return int(count[target])


def where(grid: np.ndarray, token: int) -> tuple[int, int]:
    (r,), (c,) = np.nonzero(grid == token)
    return int(r), int(c)


def maze_corner(x: np.ndarray) -> tuple[int, int]:
    """Top-left cell of the maze on its canvas (the first row and column that are not pad)."""
    rows, cols = np.nonzero(x != PAD)
    return int(rows.min()), int(cols.min())


def check_sample(x: np.ndarray, y: np.ndarray, steps: int, size: int, canvas: int) -> None:
    """One sample: pad exactly outside one size x size maze, and the label a contiguous
    path from start to goal over open cells whose length is the flood-fill distance."""
    x, y = x.reshape(canvas, canvas), y.reshape(canvas, canvas)
    r0, c0 = maze_corner(x)
    inside = np.zeros((canvas, canvas), dtype=bool)
    inside[r0:r0 + size, c0:c0 + size] = True
    assert ((x == PAD) == ~inside).all() and ((y == IGNORE_INDEX) == ~inside).all()
    maze, label = x[r0:r0 + size, c0:c0 + size], y[r0:r0 + size, c0:c0 + size]
    assert set(np.unique(maze)) <= {WALL, OPEN, START, GOAL} and set(np.unique(label)) <= {0, 1}
    assert (maze[[0, -1]] == WALL).all() and (maze[:, [0, -1]] == WALL).all()  # the border
    start, goal = where(maze, START), where(maze, GOAL)
    free = maze != WALL
    dist = flood(free, start)[goal]
    assert dist == steps >= 1
    on = {tuple(map(int, p)) for p in np.argwhere(label == 1)}
    assert start in on and goal in on and len(on) == dist + 1
    assert all(free[p] for p in on)
    prev, cur, moves = None, start, 0
    while cur != goal:
        nxt = [p for p in ((cur[0] + 1, cur[1]), (cur[0] - 1, cur[1]), (cur[0], cur[1] + 1),
                           (cur[0], cur[1] - 1)) if p in on and p != prev]
        assert len(nxt) == 1, f"the path branches or stops at {cur}"
        prev, cur, moves = cur, nxt[0], moves + 1
    assert moves == dist


@pytest.fixture(scope="module")
def maze_data(tmp_path_factory):
    dm = MazeDataModule(n_train=2 * N, n_val=N, n_test=N, n_ood=N, n_mazes=N // 2,
                        cache_dir=str(tmp_path_factory.mktemp("maze_cache")))
    return dm, {split: dm.make_split(split) for split in SPLITS}


@pytest.mark.parametrize("split", SPLITS)
def test_labels_are_the_shortest_path(maze_data, split):
    dm, data = maze_data
    batch = data[split]
    for x, y, steps, diff in zip(batch["x"].numpy(), batch["y"].numpy(), batch["steps_required"].tolist(),
                                 batch["difficulty"].tolist(), strict=True):
        check_sample(x, y, steps, dm.grid_size(split), dm.ood_size)
        assert diff == steps
    lo, hi = dm.difficulty_range(split)
    assert lo <= batch["steps_required"].min() and batch["steps_required"].max() <= hi


@pytest.mark.parametrize("split", SPLITS)
def test_every_maze_has_one_shortest_path(maze_data, split):
    dm, data = maze_data
    canvas, size = dm.ood_size, dm.grid_size(split)
    for x in data[split]["x"].numpy():
        x = x.reshape(canvas, canvas)
        r0, c0 = maze_corner(x)
        maze = x[r0:r0 + size, c0:c0 + size]
        assert count_shortest(maze != WALL, where(maze, START), where(maze, GOAL)) == 1


def test_ambiguous_mazes_are_redrawn(maze_data):
    """reasoning-gym's open grids often have several shortest paths: the filter is in use, and
    the module's path count sees them."""
    dm, _ = maze_data
    assert dm.mazes("val", N)["redraws"].sum() > 0
    grid = np.full((5, 5), WALL)
    grid[1:4, 1:4] = OPEN
    grid[1, 1], grid[3, 3] = START, GOAL  # corner to corner of a 3x3 room: 6 shortest paths
    assert shortest_path(grid)[1:] == (4, 2)
    grid[2, 2] = grid[1, 2] = grid[1, 3] = WALL  # only the way round by the left and bottom
    on, length, paths = shortest_path(grid)
    assert (length, paths, int(on.sum())) == (4, 1, 5)


def test_augmentation_is_a_symmetry_of_the_base_maze(maze_data):
    dm, data = maze_data
    batch, canvas, size = data["train"], dm.ood_size, dm.size
    base = dm.mazes("train", dm.n_mazes)
    seen, corners = set(), set()
    for j in range(len(batch["x"])):
        x, y = batch["x"][j].numpy().reshape(canvas, canvas), batch["y"][j].numpy().reshape(canvas, canvas)
        r0, c0 = maze_corner(x)
        corners.add((r0, c0))
        x, y = x[r0:r0 + size, c0:c0 + size], y[r0:r0 + size, c0:c0 + size]
        i = int(batch["index"][j]) % dm.n_mazes
        forms = [(np.rot90(g, k).T if flip else np.rot90(g, k)) for g in (base["grid"][i], base["path"][i])
                 for flip in (False, True) for k in range(4)]
        match = [s for s in range(8) if (forms[s] == x).all() and (forms[8 + s] == y).all()]
        assert match, f"training sample {j} is no rotation / reflection of base maze {i}"
        seen.add(match[0])
        assert batch["steps_required"][j] == base["steps_required"][i]
    assert len(seen) >= 6  # 48 draws of 8 symmetries
    assert len(corners) >= 5  # placed anywhere on the canvas: 48 draws of 9 offsets
    # training samples repeat the base mazes under new symmetries, and stay valid
    assert not all((batch["x"][j] == batch["x"][j + N // 2]).all() for j in range(N // 2))
    for x, y, steps in zip(batch["x"].numpy(), batch["y"].numpy(), batch["steps_required"].tolist(),
                           strict=True):
        check_sample(x, y, steps, size, canvas)


def test_same_seed_same_mazes(tmp_path, maze_data):
    _, data = maze_data
    kw = dict(n_train=8, n_val=8, n_test=8, n_ood=4, n_mazes=4, max_dist=8, ood_max_dist=10)
    a = MazeDataModule(seed=3, cache_dir=str(tmp_path / "a"), **kw)
    b = MazeDataModule(seed=3, cache_dir=str(tmp_path / "b"), **kw)  # built afresh, not from a's cache
    c = MazeDataModule(seed=4, cache_dir=str(tmp_path / "c"), **kw)
    for split in SPLITS:
        one, two, other = a.make_split(split), b.make_split(split), c.make_split(split)
        assert all((one[k] == two[k]).all() for k in one)
        assert not (one["x"] == other["x"]).all()
    # a later slice is the same samples as the same indices of a longer one
    late = a.make_split("val", 4, start=4)
    assert (late["x"] == a.make_split("val", 8)["x"][4:]).all()


def test_ood_has_longer_paths_on_larger_grids(maze_data):
    dm, data = maze_data
    assert dm.ood_size > dm.size
    longest = max(data[s]["steps_required"].max() for s in ("train", "val", "test"))
    assert data["ood"]["steps_required"].min() > longest
    canvas = dm.ood_size
    ood = data["ood"]["x"].reshape(-1, canvas, canvas)
    assert (ood != PAD).all() and (data["ood"]["y"] != IGNORE_INDEX).all()


@pytest.mark.parametrize("override, message", [
    (dict(size=3), r"size=3 is not a maze reasoning-gym can make.*allowed: integers >= 4"),
    (dict(size=9, ood_size=7), r"ood_size=7 must be an integer >= task.datamodule.size=9"),
    (dict(max_dist=12, ood_max_dist=12), r"1 <= min_dist <= max_dist < ood_max_dist"),
    (dict(size=5, max_dist=9), r"max_dist=9 is longer than any path in a 5x5 maze; allowed: <= 8"),
    (dict(n_mazes=0), r"n_mazes=0 must be an integer >= 1 or null"),
])
def test_bad_values_fail_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        MazeDataModule(**override)


def test_a_curriculum_trains_on_the_fixed_sets_short_paths_first(maze_data, tmp_path):
    dm, data = maze_data
    easy = MazeDataModule(n_train=2 * N, n_val=N, n_test=N, n_ood=N, n_mazes=N // 2,
                          cache_dir=dm.cache_dir, curriculum={"start": 4, "step": 3})
    base = dm.mazes("train", N // 2)
    assert all(np.array_equal(easy.mazes("train", N // 2)[k], base[k]) for k in base)  # one fixed set
    train = easy.make_split("train")
    assert int(train["steps_required"].max()) <= 4
    assert set(train["steps_required"].tolist()) == {d for d in base["difficulty"].tolist() if d <= 4}
    for x, y, steps in zip(train["x"], train["y"], train["steps_required"], strict=True):
        check_sample(x.numpy(), y.numpy(), int(steps), dm.size, dm.ood_size)
    for split in ("val", "test", "ood"):  # evaluation never follows the curriculum
        assert torch.equal(easy.make_split(split)["x"], data[split]["x"])
    easy.promote(1.0)
    assert easy.level == 7 and int(easy.make_split("train")["steps_required"].max()) <= 7
    fresh = MazeDataModule(n_train=8, n_mazes=None, cache_dir=dm.cache_dir, curriculum={"start": 3})
    assert int(fresh.make_split("train")["steps_required"].max()) <= 3


def test_missing_reasoning_gym_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "reasoning_gym", None)
    with pytest.raises(ConfigError, match=r"pip install 'rds-act\[benchmarks\]'"):
        MazeDataModule(n_val=2, cache_dir=str(tmp_path)).make_split("val")


SMALL = [*TINY, "task=maze", "act=fixed", "task.datamodule.n_mazes=16", "task.datamodule.max_dist=5",
         "task.datamodule.ood_max_dist=7"]


def test_cli_trains_and_tests_on_mazes(tmp_path, monkeypatch):
    """Through rds-act-train, with a path-length curriculum that widens after every epoch."""
    monkeypatch.setenv("RDS_ACT_CACHE", str(tmp_path / "cache"))
    proc = run_cli("rds_act.train", [
        *SMALL, "trainer.max_epochs=2", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}",
        "task.datamodule.curriculum={start: 2, step: 2, threshold: 0.0}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test/acc", "test/cell_acc", "ood/acc", "ood/cell_acc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert list((tmp_path / "cache").glob("maze*.npz"))
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as f:
        levels = [float(r["curriculum/level"]) for r in csv.DictReader(f) if r.get("curriculum/level")]
    assert levels[0] < levels[-1] <= 5, levels


def test_cli_rejects_a_grid_the_generator_cannot_make(tmp_path, monkeypatch):
    monkeypatch.setenv("RDS_ACT_CACHE", str(tmp_path / "cache"))
    proc = run_cli("rds_act.train", [*SMALL, "task.datamodule.size=3", f"hydra.run.dir={tmp_path / 'run'}"],
                   tmp_path)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "task.datamodule.size=3 is not a maze reasoning-gym can make" in errors[0]
