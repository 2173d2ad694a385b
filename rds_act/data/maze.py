"""Maze (HRM / TRM's per-cell form): mark the shortest start -> goal path on the grid.

Mazes come from reasoning-gym (the ``benchmarks`` extra). Its generator makes a ``size`` x
``size`` grid whose border is wall and whose interior cells are each open with probability 0.7,
places start and goal on two distinct open interior cells, and keeps the grid when the BFS
distance between them is in the asked range (so a ``size`` grid needs ``size >= 4``: two
interior cells for start and goal). These are open random grids, not perfect mazes, so a pair
often has several shortest paths; a per-cell label would then be ambiguous, so only mazes with
a **unique** shortest path are kept: the datamodule counts shortest paths itself (BFS with path
counts) and redraws with a new seed until there is exactly one (long paths are mostly
ambiguous, so they take the most redraws; the rates are in docs/results/maze.md).

Cells (``x``): 0 pad, 1 wall, 2 open, 3 start, 4 goal. Label (``y``): 1 for every cell of the
shortest path, start and goal included (``d + 1`` cells for ``d`` moves), 0 for every other maze
cell, ``IGNORE_INDEX`` (-100) for pad. This is TRM's "grid with the path drawn" reduced to what it
adds: the rest of TRM's output copies the input.

All splits share one canvas, ``ood_size`` x ``ood_size`` (the encoder's fixed height and width):
a val / test maze (``size`` x ``size``) sits in its top-left corner, an augmented training maze
anywhere on it (so every position is trained as a maze cell), and the rest is pad,
which the loss ignores (acc and cell_acc are over maze cells only). ood mazes fill the canvas.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import Tensor

from rds_act.data.base import SPLITS, TaskDataModule, sample_rng
from rds_act.data.cache import cached_rows, fixed_set_rows
from rds_act.data.sudoku import generator_version, require_generator
from rds_act.errors import ConfigError

PAD, WALL, OPEN, START, GOAL = 0, 1, 2, 3, 4
IGNORE_INDEX = -100
MIN_SIZE = 4  # reasoning-gym puts start and goal on distinct interior cells: (size-2)^2 >= 2
MAX_TRIES = 500  # redraws per maze before giving up (enough for the rarest default path length)
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


def generate_maze(size: int, dist: int, seed: int) -> np.ndarray | None:
    """A ``size`` x ``size`` grid of cell tokens from reasoning-gym whose start -> goal BFS
    distance is ``dist``; None when the generator finds none (it gives up after 1000 grids)."""
    require_generator()
    from reasoning_gym.games.maze import MazeConfig, MazeDataset

    config = MazeConfig(min_dist=dist, max_dist=dist, min_grid_size=size, max_grid_size=size,
                        seed=seed, size=1)
    try:
        meta = MazeDataset(config)[0]["metadata"]
    except RuntimeError:  # reasoning-gym's "could not generate a maze / find a floor cell"
        return None
    # every sample draws its own four distinct characters
    token = {meta["wall"]: WALL, meta["path"]: OPEN, meta["start"]: START, meta["goal"]: GOAL}
    grid = np.array([[token[ch] for ch in row] for row in meta["grid"]], dtype=np.int64)
    if grid.shape != (size, size) or (grid == START).sum() != 1 or (grid == GOAL).sum() != 1 \
            or int(meta["shortest_path_length"]) != dist:
        raise RuntimeError(f"reasoning-gym's maze is not the {size}x{size} grid with one start, "
                           f"one goal and distance {dist} that this module reads")
    return grid


def bfs(grid: np.ndarray, source: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(distance, count) [H, W] from ``source`` over non-wall, non-pad cells (4-neighbour moves):
    distance -1 where unreachable; count = the number of shortest paths, capped at 2."""
    h, w = grid.shape
    free = (grid != WALL) & (grid != PAD)
    dist = np.full((h, w), -1, dtype=np.int64)
    count = np.zeros((h, w), dtype=np.int64)
    dist[source], count[source] = 0, 1
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in _MOVES:
            a, b = r + dr, c + dc
            if 0 <= a < h and 0 <= b < w and free[a, b]:
                if dist[a, b] < 0:
                    dist[a, b] = dist[r, c] + 1
                    queue.append((a, b))
                if dist[a, b] == dist[r, c] + 1:
                    count[a, b] = min(count[a, b] + count[r, c], 2)
    return dist, count


def shortest_path(grid: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(on_path bool [H, W], length in moves, number of shortest paths capped at 2) from the
    grid's start to its goal; length -1 (and nothing on the path) when the goal is unreachable.
    A cell lies on a shortest path iff its distances to start and to goal add up to the length."""
    start = tuple(int(v) for v in np.argwhere(grid == START)[0])
    goal = tuple(int(v) for v in np.argwhere(grid == GOAL)[0])
    from_start, count = bfs(grid, start)
    length = int(from_start[goal])
    if length < 0:
        return np.zeros(grid.shape, dtype=bool), -1, 0
    from_goal, _ = bfs(grid, goal)
    on_path = (from_start >= 0) & (from_goal >= 0) & (from_start + from_goal == length)
    return on_path, length, int(count[goal])


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """The square grid under symmetry ``k`` of 0..7: ``k % 4`` quarter turns, then a transpose
    when ``k >= 4`` (the 8 rotations and reflections of the square)."""
    out = np.rot90(grid, k % 4)
    return np.ascontiguousarray(out.T if k >= 4 else out)


class MazeDataModule(TaskDataModule):
    """``size`` x ``size`` mazes (walls included) with shortest paths of ``min_dist..max_dist``
    moves for train/val/test; ``ood_size`` x ``ood_size`` mazes with ``max_dist+1..ood_max_dist``
    moves for ood. The path length is drawn uniformly from the split's range, then mazes are
    drawn (a new reasoning-gym seed each time) until one has exactly that length and a unique
    shortest path. ``difficulty`` = ``steps_required`` = the path length in moves.

    ``n_mazes``: the fixed training set's size (cached on disk); each training sample is one of
    them under one of the 8 symmetries of the square (``augment``), drawn per sample from
    (seed, index); null trains on a fresh maze per sample. val / test / ood are cached fixed sets
    and never augmented. See the module docstring for the cell tokens, the label and the padding.
    A ``curriculum`` trains on the paths of at most its level's moves (of the fixed set, or fresh).
    """

    name = "maze"

    mixes_curriculum = False

    def __init__(
        self, size: int = 9, ood_size: int = 11, min_dist: int = 2, max_dist: int = 12,
        ood_max_dist: int = 16, n_mazes: int | None = 1000, augment: bool = True,
        cache_dir: str | None = None, **kwargs,
    ):
        kwargs.setdefault("fresh_train", True)
        super().__init__(**kwargs)

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(size) or size < MIN_SIZE:
            raise ConfigError(f"task.datamodule.size={size!r} is not a maze reasoning-gym can make "
                              f"(start and goal need two interior cells); allowed: integers >= {MIN_SIZE}")
        if not is_int(ood_size) or ood_size < size:
            raise ConfigError(f"task.datamodule.ood_size={ood_size!r} must be an integer >= "
                              f"task.datamodule.size={size}")
        if not all(is_int(v) for v in (min_dist, max_dist, ood_max_dist)) \
                or not 1 <= min_dist <= max_dist < ood_max_dist:
            raise ConfigError(f"task.datamodule min_dist={min_dist}, max_dist={max_dist}, "
                              f"ood_max_dist={ood_max_dist} must be integers with "
                              "1 <= min_dist <= max_dist < ood_max_dist")
        for key, dist, n in (("max_dist", max_dist, size), ("ood_max_dist", ood_max_dist, ood_size)):
            most = (n - 2) ** 2 - 1  # a path visits each of the (n-2)^2 interior cells at most once
            if dist > most:
                raise ConfigError(f"task.datamodule.{key}={dist} is longer than any path in a "
                                  f"{n}x{n} maze; allowed: <= {most}")
        if n_mazes is not None and (not is_int(n_mazes) or n_mazes < 1):
            raise ConfigError(f"task.datamodule.n_mazes={n_mazes!r} must be an integer >= 1 or null")
        self.size, self.ood_size = size, ood_size
        self.dist, self.ood_max_dist = (min_dist, max_dist), ood_max_dist
        self.n_mazes, self.augment, self.cache_dir = n_mazes, augment, cache_dir
        self._base: dict[str, dict[str, np.ndarray]] = {}

    def difficulty_range(self, split: str) -> tuple[int, int]:
        if split == "ood":
            return self.dist[1] + 1, self.ood_max_dist
        return self.dist

    def grid_size(self, split: str) -> int:
        return self.ood_size if split == "ood" else self.size

    def make_maze(self, split: str, index: int, level: int | None = None) -> dict[str, np.ndarray]:
        """Maze ``index`` of ``split``: a pure function of (seed, split, index[, level]): ``level``
        caps the path length (a curriculum's, for fresh training mazes). ``redraws`` counts the
        mazes of the drawn length thrown away for more than one shortest path."""
        rng = sample_rng(self.seed, split, index)
        lo, hi = self.range_at(split, level)
        dist, size = int(rng.integers(lo, hi + 1)), self.grid_size(split)
        redraws = 0
        for _ in range(MAX_TRIES):
            grid = generate_maze(size, dist, int(rng.integers(2**31)))
            if grid is None:
                continue
            on_path, length, n_paths = shortest_path(grid)
            if length != dist:
                raise RuntimeError(f"reasoning-gym's maze has distance {length}, not the {dist} asked for")
            if n_paths == 1:
                break
            redraws += 1
        else:
            raise ConfigError(f"reasoning-gym made no {size}x{size} maze with a unique shortest path "
                              f"of {dist} moves in {MAX_TRIES} tries; lower task.datamodule."
                              f"{'ood_max_dist' if split == 'ood' else 'max_dist'}")
        return {"grid": grid, "path": on_path.astype(np.int64), "difficulty": np.int64(dist),
                "steps_required": np.int64(dist), "redraws": np.int64(redraws)}

    def mazes(self, split: str, n: int) -> dict[str, np.ndarray]:
        key = {"task": f"maze{self.grid_size(split)}", "split": split, "seed": int(self.seed),
               "range": list(self.difficulty_range(split)), "generator": generator_version(),
               "form": 1}
        return cached_rows(key, n, lambda i: self.make_maze(split, i), self.cache_dir,
                           desc=f"maze {self.grid_size(split)}x{self.grid_size(split)} {split} mazes")

    def make_split(self, split: str, n: int | None = None, start: int = 0) -> dict[str, Tensor]:
        n = self.sizes[split] if n is None else n
        index = np.arange(start, start + n)
        level = self.level if split == "train" else None
        rows = fixed_set_rows(split, index, self.mazes, lambda s, i: self.make_maze(s, i, level),
                              self.n_mazes, self._base, level)
        size, canvas = self.grid_size(split), self.ood_size
        offsets = np.zeros((n, 2), dtype=np.int64)
        if split == "train" and self.n_mazes is not None and self.augment:
            for j, i in enumerate(index):
                # its own stream: sample_rng(seed, "train", i) also drew maze i's length
                aug = np.random.default_rng([int(self.seed), SPLITS["train"], int(i), 1])
                k = int(aug.integers(8))
                for field in ("grid", "path"):
                    rows[field][j] = dihedral(rows[field][j], k)
                # anywhere on the canvas, so every row / column position is trained as a maze
                # cell (the ood mazes fill the canvas)
                offsets[j] = aug.integers(0, canvas - size + 1, 2)
        x = np.full((n, canvas, canvas), PAD, dtype=np.int64)
        y = np.full((n, canvas, canvas), IGNORE_INDEX, dtype=np.int64)
        for j, (r, c) in enumerate(offsets):
            x[j, r:r + size, c:c + size], y[j, r:r + size, c:c + size] = rows["grid"][j], rows["path"][j]
        return {
            "x": torch.as_tensor(x.reshape(n, -1)),
            "y": torch.as_tensor(y.reshape(n, -1)),
            "difficulty": torch.as_tensor(rows["difficulty"]),
            "steps_required": torch.as_tensor(rows["steps_required"]),
            "index": torch.as_tensor(index),
        }
