"""Loggers: a CSV logger that keeps a run's history when the run is resumed in its own dir, and
a wandb logger filed by the run's overrides, sweep and choices.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it opens the same dir again, so
resuming in place (``hydra.run.dir=<run> ckpt_path=<run>/checkpoints/last.ckpt``) used to lose
every epoch before the resume. This one appends, widening the header when new columns appear.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torch import Tensor


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an earlier metrics.csv and start from its columns (Lightning deletes it)."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume in the same run dir."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def run_identity() -> dict:
    """How a dashboard should file this run: its name from the overrides, its group the sweep it
    belongs to (None for a single run), tags naming task, strategy, model and optimizer."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    name = hydra_cfg.job.override_dirname or "defaults"
    group = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"
    tags = [f"{g}={choices.get(g)}" for g in ("task", "act", "model", "optimizer") if choices.get(g)]
    return {"name": name, "group": group, "tags": tags}


def wandb_logger(**kwargs) -> WandbLogger:
    """Lightning's WandbLogger, filed by ``run_identity`` unless the config names these itself."""
    for key, value in run_identity().items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    return WandbLogger(**kwargs)


# the per-step curves drawn as one chart each on a wandb dashboard (x = recursive step)
STEP_CHARTS = ("acc", "loss", "halt_prob", "erank")


def log_step_charts(loggers: list, curves: dict[str, float | Tensor], epoch: int) -> None:
    """Per-step validation curves (``val_curve/<name>_tXX``) as wandb line charts with the
    recursive step on the x axis, one chart per quantity, for every wandb logger present (the
    scalars themselves are logged as usual: a line per step over training)."""
    runs = [lg.experiment for lg in loggers if isinstance(lg, WandbLogger)]
    if not runs:
        return
    import wandb

    charts = {}
    for name in STEP_CHARTS:
        points = sorted((int(key.rsplit("_t", 1)[1]), float(value)) for key, value in curves.items()
                        if key.startswith(f"val_curve/{name}_t"))
        if points:
            table = wandb.Table(data=[list(p) for p in points], columns=["step", name])
            charts[f"val_step_chart/{name}"] = wandb.plot.line(
                table, "step", name, title=f"val {name} per recursive step (epoch {epoch})")
    for run in runs:
        run.log(charts)
