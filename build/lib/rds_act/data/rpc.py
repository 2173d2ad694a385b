"""Recursive pointer chasing (RPC): follow a chain of key -> value pointers through a memory."""

from __future__ import annotations

import numpy as np

from rds_act.data.base import TaskDataModule
from rds_act.errors import ConfigError


def make_rpc_sample(
    rng: np.random.Generator, n_slots: int, vocab: int, hops: int, min_chains: int = 4
) -> dict[str, np.ndarray]:
    """One memory of ``n_slots`` (key, value) pairs holding several disjoint chains.

    The queried chain has ``hops`` slots starting at ``start``; following it ends on a value that is
    no key (the label). The other slots form at least ``min_chains - 1`` chains of their own, each
    ending on a different non-key value, so guessing "the value that is not a key" scores at most
    1/min_chains: the answer can only be found by following the chain.
    """
    others = n_slots - hops
    n_other = int(rng.integers(min_chains - 1, min(others, min_chains + 2) + 1))
    cuts = np.sort(rng.choice(np.arange(1, others), n_other - 1, replace=False)) if others > 1 else []
    lengths = [hops, *np.diff(np.concatenate([[0], cuts, [others]])).tolist()]
    symbols = rng.permutation(vocab)[: n_slots + len(lengths)]
    keys, ends = symbols[:n_slots], symbols[n_slots:]
    slots, pos = [], 0
    for chain, length in enumerate(lengths):
        chain_keys = keys[pos : pos + length]
        values = [*chain_keys[1:], ends[chain]]
        slots += list(zip(chain_keys, values, strict=True))
        pos += length
    order = rng.permutation(n_slots)
    x = np.array([slots[i] for i in order] + [(keys[0], vocab)], dtype=np.int64)
    return {"x": x, "y": np.int64(ends[0]), "steps_required": np.int64(hops),
            "difficulty": np.int64(hops)}


class RPCDataModule(TaskDataModule):
    """RPC with chain length L ~ U{1..max_hops} (train/val/test) and U{1..ood_max_hops} (ood).

    Input ``x`` is [n_slots + 1, 2]: memory rows (key, value), then the query row (start, PAD=vocab).
    """

    name = "rpc"

    def __init__(
        self, n_slots: int = 16, vocab: int = 64, max_hops: int = 8, ood_max_hops: int = 12,
        min_chains: int = 4, **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= max_hops <= ood_max_hops <= n_slots - (min_chains - 1):
            raise ConfigError(
                f"task.datamodule max_hops={max_hops}, ood_max_hops={ood_max_hops} must satisfy "
                f"1 <= max_hops <= ood_max_hops <= n_slots - (min_chains - 1) = "
                f"{n_slots - (min_chains - 1)}"
            )
        if vocab < n_slots + min_chains + 3:
            raise ConfigError(f"task.datamodule.vocab={vocab} must be >= n_slots + min_chains + 3")
        self.n_slots, self.vocab, self.min_chains = n_slots, vocab, min_chains
        self.max_hops, self.ood_max_hops = max_hops, ood_max_hops

    def difficulty_range(self, split: str) -> tuple[int, int]:
        return 1, self.ood_max_hops if split == "ood" else self.max_hops

    def make_sample(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        hops = self.draw_difficulty(rng, split)
        return make_rpc_sample(rng, self.n_slots, self.vocab, hops, self.min_chains)
