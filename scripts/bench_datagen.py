"""Time to make one training split, one sample at a time against the batched generator.

    python scripts/bench_datagen.py [task=rpc] [n=8000] [repeats=3] ...

Composes the train config (Hydra overrides from argv), builds its datamodule twice
(``task.datamodule.batched=false`` and ``true``) and times ``make_split("train", n)`` for each,
alternating, best of ``repeats``. Prints both times and their ratio; compare within one run.
"""

from __future__ import annotations

import sys
import time

from _common import compose_from_argv, run_main
from hydra.utils import get_class, instantiate
from omegaconf import open_dict

from rds_act.data.base import TaskDataModule
from rds_act.errors import ConfigError


def take_int(argv: list[str], key: str, default: int) -> tuple[int, list[str]]:
    """``key=<int >= 1>`` taken out of argv (the rest are Hydra overrides)."""
    value, rest = default, []
    for arg in argv:
        if arg.startswith(key + "="):
            raw = arg.partition("=")[2]
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"{key}={raw!r} is not allowed; allowed: an integer >= 1")
            value = int(raw)
        else:
            rest.append(arg)
    return value, rest


def main() -> None:
    n, argv = take_int(sys.argv[1:], "n", 8000)
    repeats, argv = take_int(argv, "repeats", 3)
    sys.argv[1:] = argv
    cfg = compose_from_argv()
    if cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: this script times a config's generators; "
                          "allowed: no ckpt_path (name the task and its overrides instead)")
    if get_class(cfg.task.datamodule._target_).make_batch is TaskDataModule.make_batch:
        raise ConfigError(f"task={cfg.task.get('name')} has no batched generator to compare; "
                          "allowed: a task with one, e.g. task=rpc or task=parity")
    best, modules = {}, {}
    for batched in (False, True):
        with open_dict(cfg):
            cfg.task.datamodule.batched = batched
        modules[batched] = instantiate(cfg.task.datamodule)
    for _ in range(repeats):
        for batched, dm in modules.items():
            start = time.perf_counter()
            dm.make_split("train", n)
            best[batched] = min(best.get(batched, float("inf")), time.perf_counter() - start)
    name = cfg.task.get("name", "task")
    print(f"{name}: {n} training samples, best of {repeats}")
    print(f"  one sample at a time (batched=false): {best[False]:.4g} s")
    print(f"  batched (batched=true):               {best[True]:.4g} s  "
          f"({best[False] / best[True]:.1f}x faster)")


if __name__ == "__main__":
    run_main(main)
