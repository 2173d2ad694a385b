"""Parity (Graves' ACT, PonderNet): the parity of the number of +1s among a vector's ±1 entries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rds_act.data.base import TaskDataModule, sample_uniforms
from rds_act.errors import ConfigError, check_choice


@dataclass(frozen=True)
class ParityProtocol:
    """One way of running parity: the vector's entry count and the inclusive ranges of non-zero
    entries for train/val/test and for ood."""

    dim: int
    nonzero: tuple[int, int]
    ood_nonzero: tuple[int, int]


# conf/task/parity.yaml carries the same table (its `variants`), so the composed config shows the
# numbers; tests/test_parity_variants.py checks that the two agree
VARIANTS = {
    # PonderNet: train on 1..48 of 96 entries, extrapolate to 49..96
    "pondernet": ParityProtocol(96, (1, 48), (49, 96)),
    # Graves' ACT: 1..64 of 64 entries for training and testing alike; no extrapolation split,
    # so ood is fresh samples of the same distribution
    "graves": ParityProtocol(64, (1, 64), (1, 64)),
    # this repo's earlier protocol (64 entries, train 1..48, ood 49..64), kept for its figures
    "hybrid": ParityProtocol(64, (1, 48), (49, 64)),
}


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


def make_parity_batch(u: np.ndarray, nonzero: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """``make_parity_sample`` for a batch: from uniforms ``u`` ``[B, 2 * dim]`` (the positions'
    order, then their signs) and each row's count of non-zero entries."""
    rank = np.argsort(np.argsort(u[:, :dim], axis=1), axis=1)  # a random order of the positions
    where = rank < nonzero[:, None]
    plus = u[:, dim:] < 0.5
    values = np.where(where, 1 + plus, 0).astype(np.int64)
    return {"x": values, "y": ((where & plus).sum(1) % 2).astype(np.int64),
            "difficulty": nonzero.astype(np.int64), "steps_required": np.zeros(len(u), np.int64)}


class ParityDataModule(TaskDataModule):
    """Train/val/test on ``min_nonzero .. max_nonzero`` non-zero entries of ``dim``; ood on
    ``ood_min_nonzero .. ood_max_nonzero``.

    ``variant`` picks the protocol (``VARIANTS``) that fills in every value left ``None``
    (``ood_min_nonzero`` follows the training range: ``max_nonzero + 1`` where the protocol
    extrapolates, ``min_nonzero`` for graves; so a config saved before ``ood_min_nonzero``
    existed keeps its ood split):

    - ``pondernet`` (default): 96 entries, 1..48 non-zero, ood 49..96 (more entries than ever
      seen in training: PonderNet's extrapolation split);
    - ``graves``: 64 entries, 1..64 non-zero for every split. Graves' ACT trains and tests on
      one distribution and has no extrapolation split, so ood is fresh samples of the same
      1..64 distribution (new indices, nothing harder);
    - ``hybrid``: 64 entries, 1..48 non-zero, ood 49..64 (the protocol of this repo's earlier
      parity runs).

    The ood range starts either above the training range (extrapolation) or where it starts
    (the training distribution, as in graves); one that starts inside it would mix seen and
    unseen counts, and is refused.

    ``batched`` (default) makes a split in one vectorised pass; false one sample at a time (the
    stream of the figures measured before batching).
    """

    name = "parity"

    def __init__(
        self, variant: str = "pondernet", dim: int | None = None, min_nonzero: int | None = None,
        max_nonzero: int | None = None, ood_min_nonzero: int | None = None,
        ood_max_nonzero: int | None = None, batched: bool = True, **kwargs,
    ):
        super().__init__(batched=batched, **kwargs)
        check_choice("task.datamodule.variant", variant, VARIANTS)
        protocol = VARIANTS[variant]
        dim = protocol.dim if dim is None else dim
        lo = protocol.nonzero[0] if min_nonzero is None else min_nonzero
        hi = protocol.nonzero[1] if max_nonzero is None else max_nonzero
        if ood_min_nonzero is None:  # just past the training range, or where it starts (graves)
            extrapolates = protocol.ood_nonzero[0] > protocol.nonzero[1]
            ood_lo = hi + 1 if extrapolates else lo
        else:
            ood_lo = ood_min_nonzero
        ood_hi = protocol.ood_nonzero[1] if ood_max_nonzero is None else ood_max_nonzero
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (dim, lo, hi, ood_lo, ood_hi))
        if not (ints and 1 <= lo <= hi <= dim and 1 <= ood_lo <= ood_hi <= dim
                and (ood_lo > hi or ood_lo == lo)):
            raise ConfigError(
                f"task.datamodule (variant={variant}) min_nonzero={lo!r}, max_nonzero={hi!r}, "
                f"ood_min_nonzero={ood_lo!r}, ood_max_nonzero={ood_hi!r}, dim={dim!r} must be "
                "integers with 1 <= min_nonzero <= max_nonzero <= dim and 1 <= ood_min_nonzero "
                "<= ood_max_nonzero <= dim, and ood_min_nonzero either > max_nonzero "
                "(extrapolation) or = min_nonzero (the training distribution)"
            )
        self.variant, self.dim = variant, dim
        self.min_nonzero, self.max_nonzero = lo, hi
        self.ood_min_nonzero, self.ood_max_nonzero = ood_lo, ood_hi

    def difficulty_range(self, split: str) -> tuple[int, int]:
        if split == "ood":
            return self.ood_min_nonzero, self.ood_max_nonzero
        return self.min_nonzero, self.max_nonzero

    def make_sample(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        return make_parity_sample(rng, self.dim, self.draw_difficulty(rng, split))

    def make_batch(self, index: np.ndarray, split: str) -> dict[str, np.ndarray]:
        u = sample_uniforms(self.seed, split, index, 1 + 2 * self.dim)
        return make_parity_batch(u[:, 1:], self.draw_difficulties(u[:, 0], split), self.dim)
