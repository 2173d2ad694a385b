"""Sudoku (9x9 as TRM and HRM run it, and 4x4): fill every blank cell; one digit label per cell.

Puzzles come from reasoning-gym (the ``benchmarks`` extra), whose generator removes clues only
while the solution stays unique. A training set is TRM's form: a fixed set of ``n_puzzles``
puzzles, cached on disk, each training sample one of them under a random symmetry (digit
permutation, band / stack order, row / column order within them, transpose).
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from torch import Tensor

from rds_act.data.base import TaskDataModule, sample_rng
from rds_act.data.cache import cached_rows, fixed_set_rows
from rds_act.errors import ConfigError

# size -> (min_blanks, max_blanks, ood_max_blanks): ood has more blanks than training saw
DEFAULT_BLANKS = {4: (4, 10, 12), 9: (30, 45, 55)}


MISSING_GENERATOR = ("task=sudoku and task=maze need reasoning-gym, which is not installed; "
                     "pip install 'rds-act[benchmarks]'")


def require_generator() -> None:
    """One error line naming the extra when reasoning-gym is missing; cheap once imported, so
    the generators call it per item (the version lookup below is not: it costs about as much as
    generating a 4x4 puzzle)."""
    try:
        import reasoning_gym  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_GENERATOR) from None


def generator_version() -> str:
    """reasoning-gym's version (part of a cached set's key), or the line of ``require_generator``."""
    require_generator()
    try:
        return version("reasoning-gym")
    except PackageNotFoundError:
        raise ConfigError(MISSING_GENERATOR) from None


def generate_puzzle(size: int, blanks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(puzzle, solution) [size, size] from reasoning-gym; 0 marks a blank. The generator may
    stop short of ``blanks`` where removing more would break uniqueness; callers check."""
    require_generator()
    if size == 4:
        from reasoning_gym.games.mini_sudoku import MiniSudokuConfig as Config
        from reasoning_gym.games.mini_sudoku import MiniSudokuDataset as Dataset
    else:
        from reasoning_gym.games.sudoku import SudokuConfig as Config
        from reasoning_gym.games.sudoku import SudokuDataset as Dataset
    meta = Dataset(Config(min_empty=blanks, max_empty=blanks, seed=seed, size=1))[0]["metadata"]
    return np.array(meta["puzzle"], dtype=np.int64), np.array(meta["solution"], dtype=np.int64)


def candidates(grid: np.ndarray) -> np.ndarray:
    """[N, N, N] bool: digit d+1 may go in blank cell (r, c) given its row, column and box."""
    n = grid.shape[0]
    box = math.isqrt(n)
    onehot = np.zeros((n, n, n + 1), dtype=bool)
    onehot[np.arange(n)[:, None], np.arange(n)[None, :], grid] = True
    onehot = onehot[..., 1:]
    rows, cols = onehot.any(1), onehot.any(0)  # [r, d], [c, d]
    boxes = onehot.reshape(box, box, box, box, n).any((1, 3))  # [band, stack, d]
    used = rows[:, None] | cols[None, :] | np.repeat(np.repeat(boxes, box, 0), box, 1)
    return ~used & (grid == 0)[..., None]


def propagation_rounds(puzzle: np.ndarray) -> int:
    """Rounds of plain constraint propagation that solve the puzzle: each round fills every naked
    single (a cell with one candidate) and hidden single (a digit with one place in a row,
    column or box) at once. 0 when propagation alone gets stuck (search would be needed)."""
    grid, n = puzzle.copy(), puzzle.shape[0]
    box = math.isqrt(n)
    rounds = 0
    while (grid == 0).any():
        cand = candidates(grid)
        fill = np.zeros_like(grid)
        naked = cand.sum(-1) == 1
        fill[naked] = cand[naked].argmax(-1) + 1
        for d in range(n):
            c = cand[..., d]
            for r in np.flatnonzero(c.sum(1) == 1):
                fill[r, c[r].argmax()] = d + 1
            for col in np.flatnonzero(c.sum(0) == 1):
                fill[c[:, col].argmax(), col] = d + 1
            by_box = c.reshape(box, box, box, box).transpose(0, 2, 1, 3).reshape(n, n)
            for b in np.flatnonzero(by_box.sum(1) == 1):
                k = by_box[b].argmax()
                fill[(b // box) * box + k // box, (b % box) * box + k % box] = d + 1
        if not fill.any():
            return 0
        grid = np.where(fill > 0, fill, grid)
        rounds += 1
    return rounds


def augment(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """The same random validity-preserving symmetry applied to a puzzle and its solution."""
    n = puzzle.shape[0]
    box = math.isqrt(n)
    digits = np.concatenate([[0], rng.permutation(n) + 1])

    def order() -> np.ndarray:
        return np.concatenate([b * box + rng.permutation(box) for b in rng.permutation(box)])

    rows, cols, transpose = order(), order(), bool(rng.integers(2))
    out = []
    for grid in (puzzle, solution):
        g = digits[grid][rows][:, cols]
        out.append(g.T.copy() if transpose else g)
    return out[0], out[1]


class SudokuDataModule(TaskDataModule):
    """``size`` 9 or 4; blanks ``min_blanks..max_blanks`` for train/val/test and
    ``max_blanks+1..ood_max_blanks`` for ood (null: 30..45 / 46..55 for 9x9, 4..10 / 11..12 for
    4x4). ``x`` is the grid row by row (0 = blank, 1..size the given digits), ``y`` the solution
    as classes 0..size-1 for every cell; ``difficulty`` = the number of blanks,
    ``steps_required`` = ``propagation_rounds`` (0 where propagation alone does not solve it).

    ``n_puzzles``: the fixed training set's size (cached on disk; ``augment`` draws a fresh
    symmetry of one of them per training sample); null trains on fresh puzzles only (fine for
    4x4, far too slow for 9x9). A ``curriculum`` trains on puzzles of at most its level's blanks.
    """

    name = "sudoku"

    mixes_curriculum = False

    def __init__(
        self, size: int = 9, min_blanks: int | None = None, max_blanks: int | None = None,
        ood_max_blanks: int | None = None, n_puzzles: int | None = 1000, augment: bool = True,
        cache_dir: str | None = None, **kwargs,
    ):
        kwargs.setdefault("fresh_train", True)
        super().__init__(**kwargs)
        if size not in DEFAULT_BLANKS:
            raise ConfigError(f"task.datamodule.size={size!r} is not allowed; allowed: 4, 9")
        lo, hi, ood_hi = (given if given is not None else default for given, default in
                          zip((min_blanks, max_blanks, ood_max_blanks), DEFAULT_BLANKS[size], strict=True))
        most = {4: 12, 9: 64}[size]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, ood_hi)) \
                or not 1 <= lo <= hi < ood_hi <= most:
            raise ConfigError(f"task.datamodule min_blanks={lo}, max_blanks={hi}, ood_max_blanks="
                              f"{ood_hi} must be integers with 1 <= min_blanks <= max_blanks < "
                              f"ood_max_blanks <= {most}")
        if n_puzzles is not None and (not isinstance(n_puzzles, int) or n_puzzles < 1):
            raise ConfigError(f"task.datamodule.n_puzzles={n_puzzles!r} must be an integer >= 1 or null")
        self.size, self.blanks, self.ood_max_blanks = size, (lo, hi), ood_hi
        self.n_puzzles, self.augment, self.cache_dir = n_puzzles, augment, cache_dir
        self._base: dict[str, dict[str, np.ndarray]] = {}

    def difficulty_range(self, split: str) -> tuple[int, int]:
        if split == "ood":
            return self.blanks[1] + 1, self.ood_max_blanks
        return self.blanks

    def make_puzzle(self, split: str, index: int, level: int | None = None) -> dict[str, np.ndarray]:
        """Puzzle ``index`` of ``split``: a pure function of (seed, split, index[, level]). The
        blank count is drawn from the split's range (capped at ``level``, a curriculum's, for fresh
        training puzzles), and drawn again until the generator reaches it."""
        rng = sample_rng(self.seed, split, index)
        lo, hi = self.range_at(split, level)
        blanks = int(rng.integers(lo, hi + 1))
        for _ in range(100):
            puzzle, solution = generate_puzzle(self.size, blanks, int(rng.integers(2**31)))
            if int((puzzle == 0).sum()) == blanks:
                break
        else:
            raise ConfigError(f"reasoning-gym made no {self.size}x{self.size} puzzle with {blanks} blanks "
                              f"and a unique solution in 100 tries; lower task.datamodule.ood_max_blanks")
        return {"puzzle": puzzle, "solution": solution, "difficulty": np.int64(blanks),
                "steps_required": np.int64(propagation_rounds(puzzle))}

    def puzzles(self, split: str, n: int) -> dict[str, np.ndarray]:
        key = {"task": f"sudoku{self.size}", "split": split, "seed": int(self.seed),
               "range": list(self.difficulty_range(split)), "generator": generator_version()}
        return cached_rows(key, n, lambda i: self.make_puzzle(split, i), self.cache_dir,
                           desc=f"sudoku {self.size}x{self.size} {split} puzzles")

    def make_split(self, split: str, n: int | None = None, start: int = 0) -> dict[str, Tensor]:
        n = self.sizes[split] if n is None else n
        index = np.arange(start, start + n)
        level = self.level if split == "train" else None
        rows = fixed_set_rows(split, index, self.puzzles, lambda s, i: self.make_puzzle(s, i, level),
                              self.n_puzzles, self._base, level)
        if split == "train" and self.n_puzzles is not None and self.augment:
            for j, i in enumerate(index):
                rows["puzzle"][j], rows["solution"][j] = augment(
                    rows["puzzle"][j], rows["solution"][j], sample_rng(self.seed, "train", int(i)))
        cells = self.size * self.size
        return {
            "x": torch.as_tensor(rows["puzzle"].reshape(n, cells)),
            "y": torch.as_tensor(rows["solution"].reshape(n, cells) - 1),
            "difficulty": torch.as_tensor(rows["difficulty"]),
            "steps_required": torch.as_tensor(rows["steps_required"]),
            "index": torch.as_tensor(index),
        }
