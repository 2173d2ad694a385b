"""``rds-act-report PATH...``: gather finished runs into summary.csv, summary.md and PNG plots.

Each run dir written by rds-act-train / rds-act-eval holds ``metrics.json`` and Hydra's ``.hydra/``.
A run is labelled by its command-line overrides (task and act filled in from Hydra's recorded group
choices when the command line did not name them), and runs that differ only in ``seed`` are
averaged, so a whole sweep reads as one table. The report is itself a Hydra app (``conf/report.yaml``)
so there is one config system; bare paths on the command line become ``inputs=[...]``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rds_act.cli import CONF_DIR, one_line_errors
from rds_act.errors import ConfigError

# keys that tell replicas of one setting apart: averaged over, never a row of their own
REPLICATE_KEYS = ("seed", "ckpt_path")
TABLE_METRICS = ("test/acc", "test/mse", "test/avg_exit", "test/esa", "test/csr",
                 "ood/acc", "ood/mse", "ood/avg_exit")
# Hydra flags whose value is the next argument (that value is not an input path)
VALUE_FLAGS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
               "-p", "--package", "--experimental-rerun"}


@dataclass
class Run:
    path: Path
    labels: dict[str, str]
    metrics: dict[str, float | None]


@dataclass
class Group:
    """Runs sharing every label except the replicate keys (seed)."""

    key: dict[str, str]
    runs: list[Run]

    def values(self, metric: str) -> np.ndarray:
        vals = [r.metrics.get(metric) for r in self.runs]
        return np.array([v for v in vals if v is not None and math.isfinite(v)], dtype=float)


def natural_key(text: str) -> list[tuple[int, float | str]]:
    """Sort ``2`` before ``10`` and ``0.5`` before ``0.7`` in job dirs and override values."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(text))
    return [(0, float(p)) if i % 2 else (1, p) for i, p in enumerate(parts)]


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every dir holding a metrics.json under the given paths; bad input fails naming the path."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no inputs; usage: rds-act-report RUN_OR_MULTIRUN_DIR [...] (or inputs=[a,b])")
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"input path {str(path)!r} does not exist")
        root = path.parent if path.name == "metrics.json" else path
        if not root.is_dir():
            raise ConfigError(f"input path {str(path)!r} is not a directory")
        hits = sorted({m.parent for m in root.rglob("metrics.json")}, key=lambda p: natural_key(str(p)))
        found += [h for h in hits if h not in found]
    if not found:
        raise ConfigError(f"no run dirs (with a metrics.json) under {', '.join(map(str, paths))}")
    return found


def _read_yaml(path: Path) -> object:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({type(exc).__name__})") from None


def _dig(tree: object, *keys: str) -> object:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _checkpoint_run(run_dir: Path, ckpt_path: str | None) -> Path | None:
    """The training run dir an eval run's checkpoint came from (``<run>/checkpoints/x.ckpt``)."""
    if not ckpt_path:
        return None
    cwd = _dig(_read_yaml(run_dir / ".hydra" / "hydra.yaml"), "hydra", "runtime", "cwd")
    for ckpt in (Path(ckpt_path), Path(str(cwd or ".")) / ckpt_path):
        if (ckpt.parent.parent / ".hydra").is_dir():
            return ckpt.parent.parent
    return None


def run_labels(run_dir: Path, follow_checkpoint: bool = True) -> dict[str, str]:
    """Override key -> value for one run, with task, act and seed always filled in when known.

    An eval run's own config holds eval.yaml's defaults, not what its checkpoint was trained with,
    so its labels start from the training run its checkpoint lives in.
    """
    hydra_dir = run_dir / ".hydra"
    labels: dict[str, str] = {}
    for item in _read_yaml(hydra_dir / "overrides.yaml") or []:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("~"):
            labels[key.lstrip("+")] = value
    config = _read_yaml(hydra_dir / "config.yaml") or {}
    if _dig(config, "task_name") is not None:  # train vs eval: re-evaluating a run is no new seed
        labels["task_name"] = str(config["task_name"])
    if "ckpt_path" in labels and follow_checkpoint:
        source = _checkpoint_run(run_dir, labels["ckpt_path"])
        if source is None:  # this config is eval.yaml's defaults: it would mislabel the run
            print(f"warning: {run_dir}: the checkpoint's run dir is gone; task/act unknown", file=sys.stderr)
            return labels
        labels = {**run_labels(source, follow_checkpoint=False), **labels}
    choices = _dig(_read_yaml(hydra_dir / "hydra.yaml"), "hydra", "runtime", "choices") or {}
    for group, choice in choices.items():  # every run names every group: only real differences
        if not group.startswith("hydra") and choice is not None and group not in ("task", "act"):
            labels.setdefault(group, str(choice))
    target = _dig(config, "act", "_target_")
    fallback = {
        "task": choices.get("task") or _dig(config, "task", "name"),
        "act": choices.get("act") or (str(target).rsplit(".", 1)[-1].lower() if target else None),
        "seed": _dig(config, "seed"),
    }
    for key, value in fallback.items():
        if key not in labels and value is not None:
            labels[key] = str(value)
    return labels


def load_run(run_dir: Path) -> Run:
    path = run_dir / "metrics.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a JSON object of metrics")
    metrics = {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
               for k, v in raw.items()}
    return Run(run_dir, run_labels(run_dir), metrics)


def group_runs(runs: Sequence[Run], group_by: Sequence[str]) -> list[Group]:
    """One group per combination of every label but the replicate keys; ``group_by`` leads."""
    rest = {k for r in runs for k in r.labels} - set(group_by) - set(REPLICATE_KEYS)
    keys = list(group_by) + sorted(rest)
    buckets: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        buckets.setdefault(tuple(run.labels.get(k, "") for k in keys), []).append(run)
    order = sorted(buckets, key=lambda t: [natural_key(v) for v in t])
    return [Group(dict(zip(keys, t, strict=True)), buckets[t]) for t in order]


def mean_std(values: np.ndarray) -> str:
    """``mean ± sample std`` over seeds; just the mean for one value, empty for none."""
    if len(values) == 0:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def write_summary_csv(runs: Sequence[Run], path: Path, group_by: Sequence[str]) -> Path:
    label_keys = list(group_by) + sorted({k for r in runs for k in r.labels} - set(group_by))
    metric_keys = sorted({k for r in runs for k in r.metrics})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *label_keys, *metric_keys])
        for r in runs:
            metrics = ["" if r.metrics.get(k) is None else r.metrics[k] for k in metric_keys]
            writer.writerow([str(r.path), *(r.labels.get(k, "") for k in label_keys), *metrics])
    return path


def summary_table(groups: Sequence[Group], group_by: Sequence[str]) -> str:
    """Markdown table: label columns that vary (plus ``group_by``), ``n``, the headline metrics."""
    keys = [k for k in groups[0].key
            if k in group_by or len({g.key[k] for g in groups}) > 1]
    metrics = [m for m in TABLE_METRICS if any(len(g.values(m)) for g in groups)]
    header = [*keys, "n", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [g.key[k] for k in keys] + [str(len(g.runs))] + [mean_std(g.values(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(inputs: Iterable[str | Path], out_dir: str | Path,
                 group_by: Sequence[str] = ("task", "act")) -> dict:
    """Write summary.csv, summary.md and the plots into ``out_dir``; return what was written.

    Returns ``{"runs", "groups", "summary_csv", "summary_md", "table", "plots", "skipped"}``
    where ``plots`` maps a PNG name to its path and ``skipped`` maps a PNG name to why not.
    """
    from rds_act.plots import write_plots  # matplotlib is only needed once there is data

    runs = [load_run(d) for d in find_run_dirs(inputs)]  # bad input fails before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs, group_by)
    table = summary_table(groups, group_by)
    (out / "summary.md").write_text(table)
    summary_csv = write_summary_csv(runs, out / "summary.csv", group_by)
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
    if any(a.partition("=")[0].lstrip("+") == "inputs" for a in rest):
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
    _hydra_main()


if __name__ == "__main__":
    main()
