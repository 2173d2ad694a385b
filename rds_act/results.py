"""What a run leaves in its dir, in one place: the metrics.json and predictions.csv schemas,
their writers and readers, the reader of its logged history (csv/metrics.csv), and the headline
metrics printed and tabulated.

Every other module (the LightningModule's rows, train/eval, the report and its plots, the tests)
imports the column list and the readers from here, so the file format is defined once.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from rds_act.errors import ConfigError

if TYPE_CHECKING:
    from lightning import Trainer

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
# one row per test/ood sample, from which every exit metric can be recomputed
PREDICTION_COLUMNS = (
    "split", "index", "exit_step", "oracle_step", "steps_required", "difficulty", "correct",
    "correct_oracle", "correct_final", "loss", "loss_first", "loss_oracle", "error", "cell_acc",
    "steps",
)
# the step columns the plots read; older runs without ``difficulty`` still load
STEP_COLUMNS = ("exit_step", "oracle_step", "steps_required")
# printed after every train/eval run, per split
HEADLINE_METRICS = ("acc", "cell_acc", "oracle_acc", "final_acc", "mse", "changed_rel_mse", "avg_exit",
                    "oracle_step", "esa", "csr")
# the report's summary table
# (acc and avg_exit: per-sample halting; final_acc: every step run, as TRM and HRM evaluate)
TABLE_METRICS = ("test/acc", "test/cell_acc", "test/final_acc", "test/mse", "test/avg_exit",
                 "test/esa", "test/csr", "ood/acc", "ood/final_acc", "ood/mse", "ood/avg_exit")
SPLITS = ("val", "test", "ood")
# metrics.json's "status": only completed runs are tabulated and averaged by the report
STATUSES = ("completed", "interrupted", "failed")

Predictions = dict[str, np.ndarray]


def collect_metrics(trainer: Trainer, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Flat ``{split}/{name}`` floats from what the trainer last logged (curves left out)."""
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.split("/")[0] in prefixes:
            out[key] = float(value)
    return dict(sorted(out.items()))


def write_metrics(
    metrics: dict[str, float], output_dir: str | os.PathLike, status: str = "completed",
    reason: str | None = None,
) -> Path:
    """Write ``metrics.json`` atomically (NaN written as null; ``status`` first, with the
    ``reason`` a run did not complete) and return its path."""
    path = Path(output_dir) / METRICS_FILE
    head = {"status": status, **({"reason": reason} if reason else {})}
    clean = {**head, **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in metrics.items()}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_metrics(run_dir: str | os.PathLike) -> tuple[str, dict[str, float | None]]:
    """A run's metrics.json, read once: its ``status`` (runs written before it existed count as
    completed) and its metrics as floats (null and non-numbers as None); a one-line ConfigError
    when it is unreadable."""
    path = Path(run_dir) / METRICS_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a JSON object of metrics")
    metrics = {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
               for k, v in raw.items() if k not in ("status", "reason")}
    return str(raw.get("status", "completed")), metrics


def write_predictions(rows: list[dict], output_dir: str | os.PathLike) -> Path | None:
    """Write ``predictions.csv`` (columns ``PREDICTION_COLUMNS``) if there are rows."""
    if not rows:
        return None
    path = Path(output_dir) / PREDICTIONS_FILE
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_prediction_rows(run_dir: str | os.PathLike) -> list[dict[str, str]] | None:
    """predictions.csv as written, one dict per sample (every split; empty strings where a row
    has no value); None when the run has none. The one reader of that file."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_predictions(run_dir: str | os.PathLike, split: str = "test") -> Predictions | None:
    """Exit, oracle and required steps of one split from predictions.csv (None when absent)."""
    rows = read_prediction_rows(run_dir)
    if not rows or not set(STEP_COLUMNS) | {"split"} <= set(rows[0]):
        return None
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        return None
    return {c: np.array([float(r[c] or 0) for r in rows]) for c in STEP_COLUMNS}


def history_file(run_dir: str | os.PathLike) -> Path | None:
    """Where a run's logged history is: ``csv/metrics.csv`` (the newest under ``csv/``), or None."""
    files = sorted(Path(run_dir).glob("csv/**/metrics.csv"))
    return files[-1] if files else None


def read_history(run_dir: str | os.PathLike) -> list[dict[str, str]] | None:
    """The rows of a run's logged history (``history_file``): one per logging call, empty
    strings where a row has no value; None where the run has none."""
    path = history_file(run_dir)
    if path is None:
        return None
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def format_metrics(metrics: dict[str, float]) -> str:
    """One line per split with the headline metrics it has."""
    rows = []
    for split in SPLITS:
        vals = [metrics.get(f"{split}/{k}") for k in HEADLINE_METRICS]
        if any(v is not None for v in vals):
            rows.append(f"{split:5s} " + " ".join(
                f"{k}={v:.4f}" for k, v in zip(HEADLINE_METRICS, vals, strict=True) if v is not None))
    return "\n".join(rows)


@rank_zero_only
def save_results(metrics: dict[str, float], predictions: list[dict], output_dir: str) -> None:
    """What every train/eval run leaves in its run dir (rank 0 only under DDP): metrics.json
    and predictions.csv, then the headline metrics printed."""
    path = write_metrics(metrics, output_dir)
    write_predictions(predictions, output_dir)
    print(format_metrics(metrics))
    print(f"metrics: {path}")
