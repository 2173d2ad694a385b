"""Training compute to reach an accuracy, from each run's learning curve (csv/metrics.csv): the
training samples and shared-block applications (``train/block_applications``) at the first
validation where ``metric`` reaches ``threshold``, per run and as mean ± std over the runs given
(a run that never reaches it is counted as such, not dropped).

    python scripts/compute_to_accuracy.py <run dir>... [threshold=0.9] [metric=val/acc]

Block applications are the unit of compute across backbones: DynTRM applies its block once per
step, TRM ``cycles x (n_latent + 1)`` times; each run counts the steps it actually trained.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from _common import run_main

from rds_act.errors import ConfigError
from rds_act.results import history_file, read_history


def parse(argv: list[str]) -> tuple[list[Path], float, str]:
    paths = [Path(a) for a in argv if "=" not in a]
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(opts) - {"threshold", "metric"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{key}={opts[key]!r}: unknown option; allowed: threshold=<number>, metric=<name>")
    try:
        threshold = float(opts.get("threshold", "0.9"))
    except ValueError:
        raise ConfigError(f"threshold={opts['threshold']!r} is not allowed; allowed: a number") from None
    if not paths:
        raise ConfigError("give at least one run dir; usage: compute_to_accuracy.py <run dir>...")
    for p in paths:
        if history_file(p) is None:
            raise ConfigError(f"{p / 'csv' / 'metrics.csv'} does not exist; allowed: run dirs "
                              "written by rds-act-train")
    return paths, threshold, opts.get("metric", "val/acc")


def first_reach(path: Path, threshold: float, metric: str) -> tuple[float, float] | None:
    """(samples, block applications) at the first validation with ``metric >= threshold``."""
    rows = [r for r in read_history(path) or [] if r.get(metric)]
    if rows and "train/block_applications" not in rows[0]:
        raise ConfigError(f"{history_file(path)} has no train/block_applications column (a run from "
                          "before compute was counted)")
    for r in rows:
        if float(r[metric]) >= threshold:
            return float(r["train/samples"]), float(r["train/block_applications"])
    return None


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{m:.3g} ± {s:.2g}" if len(values) > 1 else f"{m:.3g}"


def main() -> None:
    paths, threshold, metric = parse(sys.argv[1:])
    reached = []
    print(f"| run | samples to {metric} >= {threshold} | block applications |")
    print("|---|---|---|")
    for p in paths:
        hit = first_reach(p, threshold, metric)
        print(f"| {p} | {hit[0]:.0f} | {hit[1]:.3g} |" if hit else f"| {p} | not reached | not reached |")
        if hit:
            reached.append(hit)
    print(f"| mean ± std ({len(reached)} of {len(paths)} reached) | "
          f"{mean_std([h[0] for h in reached])} | {mean_std([h[1] for h in reached])} |")


if __name__ == "__main__":
    run_main(main)
