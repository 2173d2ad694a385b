"""Every threshold exit rule calibrated to one max_drop, on the runs of one task, over seeds.

    python scripts/exit_rules_table.py <run dir> [<run dir> ...] [max_drop=0.01] [delta=0.1]
        [rules=halt_head,entropy,stability,kl,acceleration[,routing]] [out=outputs/exit_rules/<time>]

For each run (its best checkpoint, epochNNN.ckpt by the run's own checkpoint monitor, else
last.ckpt) and each rule, runs ``rds-act-eval eval.exit_rule=<rule>
eval.calibrate.max_drop=<max_drop>`` into ``out/<run>_<rule>/`` and prints
a markdown table per rule, mean ± std over the runs: test accuracy at exit, the last step's, the
realised drop (last − exit), the average exit, the compute saved (1 − exit / T_max), the same
drop on ood (which the calibration does not cover), and the thresholds chosen. A rule a run
cannot calibrate (a strategy without a halting threshold) is counted as such, not dropped.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import run_main

from rds_act.errors import ConfigError

DEFAULT_RULES = ("halt_head", "entropy", "stability", "kl", "acceleration")
RULES = (*DEFAULT_RULES, "routing")  # routing: for a model with an expert library (dyntrm_moe)


def parse(argv: list[str]) -> tuple[list[Path], dict[str, str]]:
    runs = [Path(a) for a in argv if "=" not in a]
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(opts) - {"max_drop", "delta", "rules", "out"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{key}={opts[key]!r}: unknown option; allowed: max_drop, delta, rules, out")
    if not runs:
        raise ConfigError("no run dirs given; usage: exit_rules_table.py <run dir> ... [max_drop=0.01]")
    for run in runs:
        if not (run / "checkpoints").is_dir():
            raise ConfigError(f"{str(run)!r} is not a training run dir (no checkpoints/)")
    for rule in opts.get("rules", ",".join(DEFAULT_RULES)).split(","):
        if rule not in RULES:
            raise ConfigError(f"rules={opts['rules']!r}: {rule!r} is unknown; allowed: {', '.join(RULES)}")
    return runs, opts


def checkpoint(run: Path) -> Path:
    best = sorted((run / "checkpoints").glob("epoch*.ckpt"))
    return best[-1] if best else run / "checkpoints" / "last.ckpt"


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    runs, opts = parse(sys.argv[1:])
    max_drop, delta = opts.get("max_drop", "0.01"), opts.get("delta", "0.1")
    rules = opts.get("rules", ",".join(DEFAULT_RULES)).split(",")
    out = Path(opts.get("out", f"outputs/exit_rules/{time.strftime('%Y-%m-%d_%H-%M-%S')}"))
    if out.exists():
        raise ConfigError(f"out={str(out)!r} exists; allowed: a new directory")
    rows: dict[str, list[dict]] = {rule: [] for rule in rules}
    failed: dict[str, list[str]] = {rule: [] for rule in rules}
    for run in runs:
        for rule in rules:
            run_dir = out / f"{run.name}_{rule}"
            proc = subprocess.run(
                [sys.executable, "-m", "rds_act.eval", f"ckpt_path={checkpoint(run)}",
                 f"eval.exit_rule={rule}", f"eval.calibrate.max_drop={max_drop}",
                 f"eval.calibrate.delta={delta}", f"hydra.run.dir={run_dir}"],
                capture_output=True, text=True)
            if proc.returncode != 0:
                why = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
                failed[rule].append(f"{run.name}: {why[0] if why else f'exit {proc.returncode}'}")
                continue
            rows[rule].append(json.loads((run_dir / "metrics.json").read_text()))
    print(f"max_drop {max_drop}, confidence {1 - float(delta):.2f}, {len(runs)} runs; evals in {out}\n")
    print(table(rows, failed))


def table(rows: dict[str, list[dict]], failed: dict[str, list[str]]) -> str:
    """The markdown table, one row per rule, from the eval runs' metrics.json contents."""
    lines = ["| rule | n | test acc at exit | test acc, last step | test drop | test avg exit | "
             "compute saved | ood drop | ood avg exit | threshold |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rule, m in rows.items():
        col = lambda k, m=m: [r[k] for r in m]  # noqa: E731
        drop = [r["test/final_acc"] - r["test/acc"] for r in m]
        ood_drop = [r["ood/final_acc"] - r["ood/acc"] for r in m]
        thresholds = ", ".join("none" if r.get("calibrate/threshold") is None  # not certified
                               else f"{r['calibrate/threshold']:.3g}" for r in m)
        n = f"{len(m)}" + (f" ({len(failed[rule])} not calibratable)" if failed[rule] else "")
        lines.append(f"| {rule} | {n} | {mean_std(col('test/acc'))} | {mean_std(col('test/final_acc'))} | "
                     f"{mean_std(drop)} | {mean_std(col('test/avg_exit'))} | {mean_std(col('test/csr'))} | "
                     f"{mean_std(ood_drop)} | {mean_std(col('ood/avg_exit'))} | {thresholds or '—'} |")
    lines += [f"{rule}: {line}" for rule, why in failed.items() for line in why]
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
