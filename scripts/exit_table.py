"""Exits against difficulty from a run's predictions.csv: per split and difficulty bucket, the
accuracy at each sample's own exit (per-sample halting) beside the accuracy at the last step
(every step run, as TRM and HRM evaluate), the mean exit step and the mean steps_required.

    python scripts/exit_table.py <run dir> [by=difficulty|steps_required] [buckets=6]

Prints a markdown table; every figure is recomputed from predictions.csv alone.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from _common import run_main

from rds_act.errors import ConfigError
from rds_act.results import PREDICTIONS_FILE, read_prediction_rows

BY = ("difficulty", "steps_required")


def parse(argv: list[str]) -> tuple[list[dict[str, str]], Path, str, int]:
    paths = [a for a in argv if "=" not in a]
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(opts) - {"by", "buckets"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}={opts[sorted(unknown)[0]]!r}: unknown option; "
                          "allowed: by=difficulty|steps_required, buckets=<integer >= 1>")
    if len(paths) != 1:
        raise ConfigError(f"give exactly one run dir (got {len(paths)}); usage: exit_table.py <run dir>")
    by = opts.get("by", "difficulty")
    if by not in BY:
        raise ConfigError(f"by={by!r} is not allowed; allowed: {', '.join(BY)}")
    buckets = opts.get("buckets", "6")
    if not buckets.isdigit() or int(buckets) < 1:
        raise ConfigError(f"buckets={buckets!r} is not allowed; allowed: an integer >= 1")
    path = Path(paths[0]) / PREDICTIONS_FILE
    rows = read_prediction_rows(paths[0])
    if rows is None:
        raise ConfigError(f"{path} does not exist; allowed: a run dir written by rds-act-train "
                          "or rds-act-eval")
    return rows, path, by, int(buckets)


def mean(rows: list[dict], column: str) -> float:
    return sum(float(r[column] or 0) for r in rows) / len(rows)


def main() -> None:
    rows, path, by, buckets = parse(sys.argv[1:])
    if not rows or by not in rows[0]:
        raise ConfigError(f"{path} has no {by!r} column")
    print(f"| split | {by} | n | acc at exit | acc at last step | mean exit | mean steps_required |")
    print("|---|---|---|---|---|---|---|")
    for split in dict.fromkeys(r["split"] for r in rows):
        part = [r for r in rows if r["split"] == split and r[by] != ""]
        values = sorted({int(float(r[by])) for r in part})
        if not values:
            continue
        lo, hi = values[0], values[-1]
        width = max(1, -(-(hi - lo + 1) // buckets))
        groups: dict[int, list[dict]] = defaultdict(list)
        for r in part:
            groups[(int(float(r[by])) - lo) // width].append(r)
        for g in sorted(groups):
            rs, a = groups[g], lo + g * width
            label = str(a) if width == 1 else f"{a}-{min(a + width - 1, hi)}"
            acc, final, exit_, need = (mean(rs, c) for c in
                                       ("correct", "correct_final", "exit_step", "steps_required"))
            print(f"| {split} | {label} | {len(rs)} | {acc:.3f} | {final:.3f} | {exit_:.2f} | {need:.2f} |")


if __name__ == "__main__":
    run_main(main)
