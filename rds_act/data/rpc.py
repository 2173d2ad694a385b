"""Recursive pointer chasing (RPC): follow a chain of key -> value pointers through a memory."""

from __future__ import annotations

import numpy as np

from rds_act.data.base import TaskDataModule, sample_uniforms, uniform_ints
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


def make_rpc_batch(
    u: np.ndarray, hops: np.ndarray, n_slots: int, vocab: int, min_chains: int = 4
) -> dict[str, np.ndarray]:
    """``make_rpc_sample``'s memories for a whole batch at once, from uniforms ``u``
    ``[B, rpc_draws(n_slots, vocab)]`` and each row's chain length ``hops``.

    In key order the queried chain takes slots ``0 .. hops-1`` and the other chains the rest,
    cut at ``n_other - 1`` distinct points drawn without replacement; every slot points at the
    next key of its chain, the last slot of a chain at that chain's end symbol.
    """
    batch = len(hops)
    rows = np.arange(batch)[:, None]
    u_count, u_cuts = u[:, 0], u[:, 1:n_slots]
    u_symbols, u_order = u[:, n_slots : n_slots + vocab], u[:, n_slots + vocab :]
    others = n_slots - hops
    n_other = uniform_ints(u_count, min_chains - 1, np.minimum(others, min_chains + 2))
    # cut points 1 .. others-1 (of the other slots): the n_other - 1 with the smallest draws
    cut = np.arange(1, n_slots)[None, :]
    keyed = np.where(cut < others[:, None], u_cuts, np.inf)
    rank = np.argsort(np.argsort(keyed, axis=1), axis=1)
    chosen = rank < (n_other - 1)[:, None]
    starts = np.zeros((batch, n_slots + 1), dtype=bool)  # chain starts in key order (+ the end)
    starts[:, 0] = starts[:, n_slots] = True
    starts[rows[:, 0], hops] = True
    starts[rows, np.where(chosen, cut + hops[:, None], 0)] = True  # (0 is a start already)
    chain = np.cumsum(starts[:, :n_slots], axis=1) - 1
    symbols = np.argsort(u_symbols, axis=1)  # a random permutation of the vocabulary per row
    keys = symbols[:, :n_slots]
    ends = symbols[:, n_slots : n_slots + min_chains + 3]
    following = np.concatenate([keys[:, 1:], keys[:, :1]], axis=1)
    values = np.where(starts[:, 1:], np.take_along_axis(ends, chain, axis=1), following)
    order = np.argsort(u_order, axis=1)
    memory = np.stack([keys, values], axis=-1)[rows, order]
    query = np.stack([keys[:, 0], np.full(batch, vocab)], axis=-1)[:, None, :]
    return {"x": np.concatenate([memory, query], axis=1).astype(np.int64),
            "y": ends[:, 0].astype(np.int64), "steps_required": hops.astype(np.int64),
            "difficulty": hops.astype(np.int64)}


def rpc_draws(n_slots: int, vocab: int) -> int:
    """Uniforms per sample of ``make_rpc_batch``: chain length, chain count, cut points, the
    symbol permutation and the slot order."""
    return 1 + 1 + (n_slots - 1) + vocab + n_slots


class RPCDataModule(TaskDataModule):
    """RPC with chain length L ~ U{1..max_hops} (train/val/test) and U{1..ood_max_hops} (ood).

    Input ``x`` is [n_slots + 1, 2]: memory rows (key, value), then the query row (start, PAD=vocab).
    ``batched`` (default) makes a split in one vectorised pass (``make_rpc_batch``); false makes
    it one ``make_rpc_sample`` at a time, the stream of the figures measured before batching.
    """

    name = "rpc"

    def __init__(
        self, n_slots: int = 16, vocab: int = 64, max_hops: int = 8, ood_max_hops: int = 12,
        min_chains: int = 4, batched: bool = True, **kwargs,
    ):
        super().__init__(batched=batched, **kwargs)
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

    def make_batch(self, index: np.ndarray, split: str) -> dict[str, np.ndarray]:
        u = sample_uniforms(self.seed, split, index, rpc_draws(self.n_slots, self.vocab))
        hops = self.draw_difficulties(u[:, 0], split)
        return make_rpc_batch(u[:, 1:], hops, self.n_slots, self.vocab, self.min_chains)
