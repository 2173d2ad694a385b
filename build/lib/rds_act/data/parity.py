"""Parity (Graves' ACT, PonderNet): the parity of the number of +1s among a vector's ±1 entries."""

from __future__ import annotations

import numpy as np

from rds_act.data.base import TaskDataModule
from rds_act.errors import ConfigError


def make_parity_sample(rng: np.random.Generator, dim: int, nonzero: int) -> dict[str, np.ndarray]:
    """``nonzero`` random positions of a ``dim``-vector set to ±1 (the rest 0); label = parity of
    the count of +1s. Tokens are 0 (zero entry), 1 (-1) and 2 (+1).

    The task does not know a true step count, so ``steps_required`` is 0 (unknown); the number of
    non-zero entries is its difficulty.
    """
    values = np.zeros(dim, dtype=np.int64)
    where = rng.choice(dim, nonzero, replace=False)
    signs = rng.integers(0, 2, nonzero)  # 1 = +1
    values[where] = 1 + signs
    return {
        "x": values, "y": np.int64(signs.sum() % 2), "difficulty": np.int64(nonzero),
        "steps_required": np.int64(0),
    }


class ParityDataModule(TaskDataModule):
    """Train/val/test on ``min_nonzero .. max_nonzero`` non-zero entries; ood on
    ``max_nonzero + 1 .. ood_max_nonzero`` (harder: more entries than ever seen in training)."""

    name = "parity"

    def __init__(
        self, dim: int = 64, min_nonzero: int = 1, max_nonzero: int = 48,
        ood_max_nonzero: int = 64, **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= min_nonzero <= max_nonzero < ood_max_nonzero <= dim:
            raise ConfigError(
                f"task.datamodule min_nonzero={min_nonzero}, max_nonzero={max_nonzero}, "
                f"ood_max_nonzero={ood_max_nonzero}, dim={dim} must satisfy "
                "1 <= min_nonzero <= max_nonzero < ood_max_nonzero <= dim"
            )
        self.dim, self.min_nonzero = dim, min_nonzero
        self.max_nonzero, self.ood_max_nonzero = max_nonzero, ood_max_nonzero

    def difficulty_range(self, split: str) -> tuple[int, int]:
        if split == "ood":
            return self.max_nonzero + 1, self.ood_max_nonzero
        return self.min_nonzero, self.max_nonzero

    def make_sample(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        return make_parity_sample(rng, self.dim, self.draw_difficulty(rng, split))
