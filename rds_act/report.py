"""``rds-act-report PATH...``: gather finished runs into summary.csv, summary.md and PNG plots.

Each run dir written by rds-act-train / rds-act-eval holds ``metrics.json`` and Hydra's ``.hydra/``.
A run is labelled by its command-line overrides (task and act filled in from Hydra's recorded group
choices when the command line did not name them), and runs that differ only in ``seed`` are
averaged, so a whole sweep reads as one table. The report is itself a Hydra app (``conf/report.yaml``)
so there is one config system; bare paths on the command line become ``inputs=[...]``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rds_act.cli import CONF_DIR, check_composes, one_line_errors, parse_override
from rds_act.errors import ConfigError
from rds_act.plots import write_plots
from rds_act.results import TABLE_METRICS
from rds_act.runs import Group, Run, find_run_dirs, group_runs, load_run

# Hydra flags whose value is the next argument (that value is not an input path)
VALUE_FLAGS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
               "-p", "--package", "--experimental-rerun"}


# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (then the normal's)
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
       2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
       2.052, 2.048, 2.045, 2.042)


def mean_std(values: np.ndarray) -> str:
    """``mean ± sample std [95 % interval of the mean]`` over seeds (Student's t); just the mean
    for one value, empty for none."""
    if len(values) == 0:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean, std = values.mean(), values.std(ddof=1)
    half = (T95[len(values) - 2] if len(values) - 1 <= len(T95) else 1.960) * std / np.sqrt(len(values))
    return f"{mean:.3f} ± {std:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def _group_id(key: dict[str, str]) -> tuple:
    return tuple(sorted(key.items()))


def write_summary_csv(runs: Sequence[Run], path: Path, group_by: Sequence[str]) -> Path:
    label_keys = list(group_by) + sorted({k for r in runs for k in r.labels} - set(group_by))
    metric_keys = sorted({k for r in runs for k in r.metrics})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "status", *label_keys, *metric_keys])
        for r in runs:
            metrics = ["" if r.metrics.get(k) is None else r.metrics[k] for k in metric_keys]
            writer.writerow([str(r.path), r.status, *(r.labels.get(k, "") for k in label_keys),
                             *metrics])
    return path


def summary_table(groups: Sequence[Group], group_by: Sequence[str],
                  not_completed: dict[tuple, int] | None = None) -> str:
    """Markdown table: label columns that vary (plus ``group_by``), ``n`` (completed seeds),
    ``failed`` (that group's seeds that failed or were interrupted: counted, never averaged in),
    the headline metrics as mean ± std [95 % interval]."""
    keys = [k for k in groups[0].key
            if k in group_by or len({g.key[k] for g in groups}) > 1]
    metrics = [m for m in TABLE_METRICS if any(len(g.values(m)) for g in groups)]
    not_completed = not_completed or {}
    header = [*keys, "n", "failed", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        failed = str(not_completed.get(_group_id(g.key), 0))
        cells = ([g.key[k] for k in keys] + [str(len(g.runs)), failed]
                 + [mean_std(g.values(m)) for m in metrics])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(inputs: Iterable[str | Path], out_dir: str | Path,
                 group_by: Sequence[str] = ("task", "act")) -> dict:
    """Write summary.csv, summary.md and the plots into ``out_dir``; return what was written.

    Returns ``{"runs", "groups", "summary_csv", "summary_md", "table", "plots", "skipped"}``
    where ``plots`` maps a PNG name to its path and ``skipped`` maps a PNG name to why not.
    """
    found = [load_run(d) for d in find_run_dirs(inputs)]  # bad input fails before anything is written
    runs = [r for r in found if r.status == "completed"]
    left_out = [r for r in found if r.status != "completed"]
    if not runs:
        raise ConfigError(f"no completed runs among {len(found)} found (statuses: "
                          f"{', '.join(sorted({r.status for r in found}))})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    every = group_runs(found, group_by)  # one key set for completed and not completed runs
    not_completed = {_group_id(g.key): sum(r.status != "completed" for r in g.runs) for g in every}
    in_table = [Group(g.key, [r for r in g.runs if r.status == "completed"]) for g in every]
    groups = [g for g in in_table if g.runs]
    table = summary_table(in_table, group_by, not_completed)
    if left_out:
        table += "\nLeft out of the table (not completed):\n\n" + "".join(
            f"- {r.path}: {r.status}\n" for r in left_out)
    (out / "summary.md").write_text(table)
    summary_csv = write_summary_csv(found, out / "summary.csv", group_by)
    plots, skipped = write_plots(groups, out)
    return {"runs": runs, "groups": groups, "summary_csv": summary_csv, "summary_md": out / "summary.md",
            "table": table, "plots": plots, "skipped": skipped}


def positional_to_override(argv: list[str]) -> list[str]:
    """Hydra takes only ``key=value``; turn bare paths into one quoted ``inputs=[...]`` override."""
    paths, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in VALUE_FLAGS:
            rest += argv[i:i + 2]
            i += 2
            continue
        (rest if "=" in arg or arg.startswith("-") else paths).append(arg)
        i += 1
    if not paths:
        return rest
    if any(parse_override(a)[0] == "inputs" for a in rest):
        raise ConfigError("give input paths either as arguments or as inputs=[...], not both")
    for path in paths:
        if set(path) & set("'\\$"):
            raise ConfigError(f"input path {path!r} contains ' \\ or $; rename it or use inputs=[...]")
    return rest + ["inputs=[" + ",".join(f"'{p}'" for p in paths) + "]"]


@one_line_errors
def report(cfg: DictConfig) -> dict:
    """The Hydra task: write the report into this run's own dir and print the table."""
    inputs = OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else [cfg.inputs]
    group_by = [cfg.group_by] if isinstance(cfg.group_by, str) else list(cfg.group_by)
    out_dir = HydraConfig.get().runtime.output_dir
    result = write_report([str(p) for p in inputs if p], out_dir, group_by)
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    print(result["table"], end="")
    print(f"report: {out_dir}")
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def _hydra_main(cfg: DictConfig) -> None:
    report(cfg)


def main() -> None:
    sys.argv[1:] = one_line_errors(positional_to_override)(sys.argv[1:])
    one_line_errors(check_composes)(sys.argv[1:], "report")
    _hydra_main()


if __name__ == "__main__":
    main()
