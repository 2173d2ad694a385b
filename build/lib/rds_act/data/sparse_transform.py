"""Sparse sequence transform: a fixed sparse, non-linear rule applied c times to a vector."""

from __future__ import annotations

import numpy as np

from rds_act.data.base import TaskDataModule
from rds_act.errors import ConfigError, check_choice

VARIANTS = ("learnable", "seed")


class SparseRule:
    """``F(x)_i = 0.5 x_i + tanh(x_{pi(i)})`` for i in a fixed subset S (``frac`` of the coordinates),
    identity elsewhere; ``pi`` is a fixed cycle through S.

    Because pi stays inside S and the update is non-linear, ``F^c(x)`` mixes c levels of the cycle
    and cannot be written as one application: it takes c steps.
    """

    def __init__(self, dim: int, frac: float = 0.2, rule_seed: int = 0):
        rng = np.random.default_rng([int(rule_seed), 99])
        k = max(2, int(round(frac * dim)))
        self.subset = np.sort(rng.choice(dim, k, replace=False))
        cycle = rng.permutation(self.subset)
        self.source = np.roll(cycle, -1)  # coordinate cycle[j] reads from cycle[j + 1]
        self.target = cycle
        self.mask = np.zeros(dim, dtype=np.float32)
        self.mask[self.subset] = 1.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[..., self.target] = 0.5 * x[..., self.target] + np.tanh(x[..., self.source])
        return out

    def apply(self, x: np.ndarray, count: int) -> np.ndarray:
        for _ in range(count):
            x = self(x)
        return x


class SparseTransformDataModule(TaskDataModule):
    """``variant=learnable``: input (x, c) with c visible, target ``F^c(x)``; c ~ U{1..max_count},
    ood c ~ U{1..ood_max_count}.

    ``variant=seed`` reproduces the original generator: c ~ U{1..9} hidden from the model, and each
    of the c steps adds fresh noise ``Bern(0.2) * N(0, 0.5^2)``. The target then depends on noise
    the input does not contain, so no model can beat predicting x itself except by memorising.
    """

    name = "sparse_transform"

    def __init__(
        self, dim: int = 32, max_count: int = 8, ood_max_count: int = 12, frac: float = 0.2,
        rule_seed: int = 0, variant: str = "learnable", noise_std: float = 0.5, **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("task.datamodule.variant", variant, VARIANTS)
        if not 1 <= max_count <= ood_max_count:
            raise ConfigError(
                f"task.datamodule max_count={max_count}, ood_max_count={ood_max_count} must "
                "satisfy 1 <= max_count <= ood_max_count"
            )
        self.dim, self.variant, self.frac, self.noise_std = dim, variant, frac, noise_std
        self.max_count, self.ood_max_count = max_count, ood_max_count
        self.rule = SparseRule(dim, frac, rule_seed)

    def difficulty_range(self, split: str) -> tuple[int, int]:
        return 1, self.ood_max_count if split == "ood" else self.max_count

    def make_sample(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        count = self.draw_difficulty(rng, split)
        x = rng.standard_normal(self.dim).astype(np.float32)
        if self.variant == "learnable":
            y, mask, visible = self.rule.apply(x, count), self.rule.mask, count
        else:
            masks = rng.random((count, self.dim)) < self.frac
            deltas = rng.normal(0.0, self.noise_std, (count, self.dim))
            y = x + (masks * deltas).sum(0)
            mask, visible = masks.any(0).astype(np.float32), 0
        return {
            "x": x, "y": y.astype(np.float32), "mask": mask.astype(np.float32),
            "count": np.int64(visible), "steps_required": np.int64(count),
            "difficulty": np.int64(count),
        }
