"""Run records: find the run dirs under a path, label each by its overrides and group choices,
and group replicas (seeds) of one setting. The report and its plots both build on these."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rds_act.cli import CONF_DIR, parse_override
from rds_act.errors import ConfigError
from rds_act.results import METRICS_FILE, read_metrics

# keys that tell replicas of one setting apart: averaged over, never a row of their own
REPLICATE_KEYS = ("seed", "ckpt_path")


@dataclass
class Run:
    path: Path
    labels: dict[str, str]
    metrics: dict[str, float | None]
    status: str = "completed"  # metrics.json's status: interrupted / failed runs are not averaged


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
        root = path.parent if path.name == METRICS_FILE else path
        if not root.is_dir():
            raise ConfigError(f"input path {str(path)!r} is not a directory")
        hits = sorted({m.parent for m in root.rglob(METRICS_FILE)  # not an earlier attempt's, kept
                       if ".hydra" not in m.relative_to(root).parts}, key=lambda p: natural_key(str(p)))
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


def group_defaults() -> dict[str, str]:
    """Each config group's default option in conf/train.yaml (``training: unroll``, ...)."""
    defaults = _dig(_read_yaml(CONF_DIR / "train.yaml"), "defaults") or []
    return {k: str(v) for d in defaults if isinstance(d, dict) for k, v in d.items() if v is not None}


def run_labels(run_dir: Path, follow_checkpoint: bool = True) -> dict[str, str]:
    """Override key -> value for one run, with task, act and seed always filled in when known.

    An eval run's own config holds eval.yaml's defaults, not what its checkpoint was trained with,
    so its labels start from the training run its checkpoint lives in.
    """
    hydra_dir = run_dir / ".hydra"
    labels: dict[str, str] = {}
    for item in _read_yaml(hydra_dir / "overrides.yaml") or []:
        key, value, deleted = parse_override(str(item))
        if value is not None and not deleted:
            labels[key] = value
    config = _read_yaml(hydra_dir / "config.yaml") or {}
    kind = _dig(config, "run_kind") or _dig(config, "task_name")  # task_name: older runs
    if kind is not None:  # train vs eval: re-evaluating a run is no new seed
        labels["run_kind"] = str(kind)
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
    if choices:  # a run from before a group existed ran what is now that group's default
        for group, default in group_defaults().items():
            if group not in choices and group not in ("task", "act"):
                labels.setdefault(group, default)
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
    status, metrics = read_metrics(run_dir)
    return Run(run_dir, run_labels(run_dir), metrics, status)


def group_runs(runs: Sequence[Run], group_by: Sequence[str]) -> list[Group]:
    """One group per combination of every label but the replicate keys; ``group_by`` leads."""
    rest = {k for r in runs for k in r.labels} - set(group_by) - set(REPLICATE_KEYS)
    keys = list(group_by) + sorted(rest)
    buckets: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        buckets.setdefault(tuple(run.labels.get(k, "") for k in keys), []).append(run)
    order = sorted(buckets, key=lambda t: [natural_key(v) for v in t])
    return [Group(dict(zip(keys, t, strict=True)), buckets[t]) for t in order]
