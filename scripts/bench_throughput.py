"""Training throughput of a config across batch sizes, and where the time goes.

    python scripts/bench_throughput.py [batch_sizes=64,128,256,512] [task=rpc] [trainer=gpu] ...

For each batch size: generating the batches' samples (the datamodule's own generator), the same
batches through forward, strategy loss, backward and the optimizer step in a bare torch loop, and
under Lightning's loop (the difference is the framework's share). Prints samples/s and shared-block
applications/s end to end (data generation included), the three shares, and the best batch size.
Figures are for one machine and one run; compare rows within a run.
"""

from __future__ import annotations

import sys
import time

import lightning as L
from _common import build, compose_from_argv, run_main
from bench_overhead import bare_time, lightning_time
from omegaconf import open_dict

from rds_act.errors import ConfigError

STEPS, WARMUP = 30, 5
DEFAULT_BATCHES = (64, 128, 256, 512)


def batch_sizes(argv: list[str]) -> tuple[list[int], list[str]]:
    """``batch_sizes=a,b,c`` taken out of argv (the rest are Hydra overrides)."""
    sizes, rest = list(DEFAULT_BATCHES), []
    for arg in argv:
        if arg.startswith("batch_sizes="):
            raw = arg.partition("=")[2]
            try:
                sizes = [int(v) for v in raw.split(",")]
            except ValueError:
                sizes = []
            if not sizes or any(v < 1 for v in sizes):
                raise ConfigError(f"batch_sizes={raw!r} is not allowed; allowed: integers >= 1 "
                                  "separated by commas, e.g. batch_sizes=64,128,256")
        else:
            rest.append(arg)
    return sizes, rest


def measure(batch: int, steps: int = STEPS, warmup: int = WARMUP) -> dict[str, float]:
    """Seconds to generate, to train bare and to train under Lightning on ``steps - warmup`` batches."""
    cfg = compose_from_argv([f"task.datamodule.n_train={batch * steps}", "task.datamodule.n_val=1",
                             "task.datamodule.n_test=1", "task.datamodule.n_ood=1", "logger=none",
                             "callbacks=none"])
    with open_dict(cfg):
        cfg.task.datamodule.batch_size = batch
    L.seed_everything(0, verbose=False)
    module, dm = build(cfg)
    start = time.perf_counter()
    dm.setup()  # the training set for one epoch: batch x steps samples from the generator
    data = (time.perf_counter() - start) * (steps - warmup) / steps
    bare = bare_time(module, dm, steps, warmup)
    L.seed_everything(0, verbose=False)
    module, dm = build(cfg)
    dm.setup()
    light = lightning_time(module, dm, steps, warmup)
    samples = batch * (steps - warmup)
    applications = samples * module.model.T_max * module.model.block_applications
    return {"data": data, "bare": bare, "lightning": light, "samples": samples,
            "applications": applications}


def main() -> None:
    sizes, sys.argv[1:] = batch_sizes(sys.argv[1:])
    build(compose_from_argv())  # a bad override or checkpoint: one line before any table
    rows = []
    print("batch  samples/s  applications/s  data  fwd/bwd/opt  framework")
    for batch in sizes:
        m = measure(batch)
        total = m["data"] + m["lightning"]
        # Lightning's step holds the bare loop's work: a bare run slower than it is noise, so the
        # compute share is capped at Lightning's time and the three shares still add up to 100 %
        compute = min(m["bare"], m["lightning"])
        framework = m["lightning"] - compute
        rows.append((m["samples"] / total, batch))
        print(f"{batch:5d} {m['samples'] / total:10.0f} {m['applications'] / total:15.0f} "
              f"{m['data'] / total:5.0%} {compute / total:12.0%} {framework / total:10.0%}")
    best = max(rows)
    print(f"best batch size: {best[1]} ({best[0]:.0f} samples/s end to end)")


if __name__ == "__main__":
    run_main(main)
