"""How far can exits follow the count on parity, given what a token holds? For each chunk size,
Spearman ρ(count of non-zero entries, number of tokens whose chunk holds an odd number of +1s) on
the task's own test and ood samples. Under `task.encoder.embed=lookup` a token can carry its
chunk's parity from the first step, so the number of odd tokens, not the count, is what is left
to combine; an exit rule driven by it cannot follow the count better than this ρ.

    python scripts/parity_rho_ceiling.py [task.datamodule.variant=pondernet] [chunks=1,2,4,8] [n=20000]
    python scripts/parity_rho_ceiling.py ckpt_path=<run>/checkpoints/last.ckpt   # the task a run trained on

Prints a markdown table (split, count range, then ρ per chunk size).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _common import build, compose_from_argv, run_main
from hydra.utils import instantiate
from torchmetrics.functional import spearman_corrcoef

from rds_act.errors import ConfigError


def parse(argv: list[str]) -> tuple[list[int], int, list[str]]:
    chunks, n, rest = [1, 2, 4, 8], 20000, []
    for arg in argv:
        key, _, value = arg.partition("=")
        try:
            if key == "chunks":
                chunks = [int(c) for c in value.split(",")]
            elif key == "n":
                n = int(value)
            else:
                rest.append(arg)
        except ValueError:
            kind = "comma-separated integers" if key == "chunks" else "an integer"
            raise ConfigError(f"{key}={value!r} must be {kind}") from None
    if n < 2 or not chunks or min(chunks) < 1:
        raise ConfigError(f"n={n} must be >= 2 and every chunk in chunks={chunks} >= 1")
    return chunks, n, rest


def odd_tokens(x: np.ndarray, chunk: int) -> np.ndarray:
    """Per sample, the number of chunks holding an odd number of +1 entries (token 2)."""
    pad = (-x.shape[1]) % chunk
    plus = np.pad(x == 2, ((0, 0), (0, pad))).reshape(len(x), -1, chunk)
    return (plus.sum(-1) % 2).sum(-1)


def main() -> None:
    chunks, n, rest = parse(sys.argv[1:])
    sys.argv[1:] = ["task=parity", *rest]
    cfg = compose_from_argv()
    dm = build(cfg)[1] if cfg.get("ckpt_path") else instantiate(cfg.task.datamodule)
    print(f"variant={dm.variant}, {dm.dim} entries, {n} samples a split\n")
    print("| split | non-zero entries | " + " | ".join(f"chunk {c}" for c in chunks) + " |")
    print("|---|---|" + "---|" * len(chunks))
    for split in ("test", "ood"):
        batch = dm.make_batch(np.arange(n), split)
        count = torch.as_tensor(batch["difficulty"], dtype=torch.float64)
        rhos = [spearman_corrcoef(torch.as_tensor(odd_tokens(batch["x"], c), dtype=torch.float64), count)
                for c in chunks]
        lo, hi = dm.difficulty_range(split)
        print(f"| {split} | {lo}–{hi} | " + " | ".join(f"{r.item():.2f}" for r in rhos) + " |")


if __name__ == "__main__":
    run_main(main)
