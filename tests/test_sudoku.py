"""task=sudoku: reasoning-gym puzzles, unique solutions, propagation rounds, symmetries, cache."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TINY, run_cli

from rds_act.data.sudoku import (
    SudokuDataModule,
    augment,
    candidates,
    generate_puzzle,
    propagation_rounds,
)


def valid_solution(grid: np.ndarray) -> bool:
    n = grid.shape[0]
    box = int(round(n**0.5))
    units = [grid[r] for r in range(n)] + [grid[:, c] for c in range(n)]
    units += [grid[i:i + box, j:j + box].ravel() for i in range(0, n, box) for j in range(0, n, box)]
    return all(sorted(u.tolist()) == list(range(1, n + 1)) for u in units)


def count_solutions(puzzle: np.ndarray, limit: int = 2) -> int:
    """Plain backtracking, written apart from the generator's own check."""
    blanks = np.argwhere(puzzle == 0)
    if not len(blanks):
        return 1
    r, c = blanks[0]
    total = 0
    for d in np.flatnonzero(candidates(puzzle)[r, c]) + 1:
        puzzle[r, c] = d
        total += count_solutions(puzzle, limit - total)
        puzzle[r, c] = 0
        if total >= limit:
            break
    return total


@pytest.fixture
def sudoku4(tmp_path):
    dm = SudokuDataModule(size=4, n_puzzles=40, n_train=80, n_val=20, n_test=20, n_ood=20,
                          cache_dir=str(tmp_path), seed=3)
    dm.setup()
    return dm


def test_every_puzzle_has_one_solution_the_label(sudoku4):
    for split in ("train", "val", "test", "ood"):
        data = sudoku4.data[split].tensors
        for x, y, blanks in zip(data["x"].numpy(), data["y"].numpy(), data["difficulty"].numpy(),
                                strict=True):
            grid, solution = x.reshape(4, 4), y.reshape(4, 4) + 1
            assert valid_solution(solution)
            assert ((grid == 0) | (grid == solution)).all()  # the givens are the solution's
            assert (grid == 0).sum() == blanks
            assert count_solutions(grid.copy()) == 1


def test_blank_ranges_per_split_and_ood_harder(sudoku4):
    train = sudoku4.data["train"].tensors["difficulty"]
    ood = sudoku4.data["ood"].tensors["difficulty"]
    assert int(train.min()) >= 4 and int(train.max()) <= 10
    assert int(ood.min()) >= 11 and int(ood.max()) <= 12


def test_propagation_rounds_counted_and_zero_when_stuck():
    solution = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    one = solution.copy()
    one[0, 0] = 0
    assert propagation_rounds(one) == 1
    # a 2x2 "deadly pattern" of blanks has two solutions: propagation cannot finish it
    stuck = solution.copy()
    stuck[0, 0] = stuck[0, 1] = stuck[2, 0] = stuck[2, 1] = 0
    assert propagation_rounds(stuck) == 0
    puzzle, _ = generate_puzzle(9, 40, 5)
    assert propagation_rounds(puzzle) >= 1


def test_symmetries_keep_puzzles_valid_and_solutions_unique():
    rng = np.random.default_rng(0)
    puzzle, solution = generate_puzzle(9, 35, 1)
    seen = set()
    for _ in range(5):
        p, s = augment(puzzle, solution, rng)
        assert valid_solution(s) and ((p == 0) | (p == s)).all() and (p == 0).sum() == 35
        assert propagation_rounds(p) == propagation_rounds(puzzle)
        seen.add(s.tobytes())
    assert len(seen) == 5


def test_training_samples_are_a_pure_function_of_seed_and_index(tmp_path):
    def batch(seed, epoch):
        dm = SudokuDataModule(size=4, n_puzzles=10, n_train=30, n_val=4, n_test=4, n_ood=4,
                              cache_dir=str(tmp_path), seed=seed)
        return dm.make_split("train", 30, epoch * 30)

    a, b = batch(1, 2), batch(1, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(batch(1, 3)["x"], a["x"])  # a new epoch, new symmetries
    assert len(list(tmp_path.glob("sudoku4-*.npz"))) >= 1  # the fixed sets were cached


def test_a_curriculum_trains_on_the_fixed_sets_easiest_puzzles_first(tmp_path):
    full = SudokuDataModule(size=4, n_puzzles=24, n_train=48, cache_dir=str(tmp_path), seed=0)
    easy = SudokuDataModule(size=4, n_puzzles=24, n_train=48, cache_dir=str(tmp_path), seed=0,
                            curriculum={"start": 6, "step": 2})
    base = full.puzzles("train", 24)
    assert all(np.array_equal(easy.puzzles("train", 24)[k], base[k]) for k in base)
    train = easy.make_split("train")
    assert set(train["difficulty"].tolist()) == {d for d in base["difficulty"].tolist() if d <= 6}
    assert ((train["x"] == 0).sum(1) == train["difficulty"]).all()
    assert int(full.make_split("train")["difficulty"].max()) > 6
    easy.promote(1.0)
    assert easy.level == 8 and int(easy.make_split("train")["difficulty"].max()) <= 8


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    dm = SudokuDataModule(size=4, n_puzzles=5, n_train=5, n_val=3, n_test=3, n_ood=3,
                          cache_dir=str(tmp_path), seed=0)
    first = dm.puzzles("val", 3)
    for path in tmp_path.glob("*-val-*.npz"):
        path.write_bytes(b"not a zip")
    again = dm.puzzles("val", 3)
    assert all(np.array_equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("override, message", [
    ("task.datamodule.size=5", "task.datamodule.size=5"),
    ("task.datamodule.max_blanks=13", "ood_max_blanks"),
])
def test_bad_values_are_one_error_line(tmp_path, override, message):
    proc = run_cli("rds_act.train", ["task=sudoku", override, *TINY, f"hydra.run.dir={tmp_path / 'r'}"],
                   tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and message in lines[-1] and "Traceback" not in proc.stderr
