"""Turn a composed config into objects; shared by the train and eval entry points."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import hydra
from lightning import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from rds_act.act.exits import build_exit_rule
from rds_act.errors import ConfigError
from rds_act.metrics import PREDICTION_COLUMNS
from rds_act.module import ACTLitModule


def build_module(cfg: DictConfig) -> tuple[ACTLitModule, LightningDataModule]:
    """The datamodule and the LightningModule (backbone + strategy + task loss).

    ``cfg.eval.exit`` / ``cfg.eval.threshold`` (eval config only) pick the exit rule used when
    evaluating; without them the strategy's own halting rule decides.
    """
    datamodule = hydra.utils.instantiate(cfg.task.datamodule)
    model = hydra.utils.instantiate(cfg.model)
    strategy = hydra.utils.instantiate(cfg.act)
    task_loss = hydra.utils.instantiate(cfg.task.loss)
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    eval_cfg = cfg.get("eval") or {}
    exit_rule = build_exit_rule(
        eval_cfg.get("exit", "halt_head"), strategy, eval_cfg.get("threshold"), task_loss.kind
    )
    ood_T_max = int(cfg.task.get("ood_T_max") or model.T_max)
    if ood_T_max < model.T_max:
        raise ConfigError(f"task.ood_T_max={ood_T_max} must be >= T_max={model.T_max}")
    module = ACTLitModule(
        model, strategy, task_loss, optimizer, ood_T_max=ood_T_max, exit_rule=exit_rule,
        scheduler=scheduler,
        run_config=OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
        ),
    )
    return module, datamodule


def build_trainer(
    cfg: DictConfig, with_callbacks: bool = True, extra_callbacks: list[Callback] | None = None
) -> Trainer:
    callbacks: list[Callback] = list(extra_callbacks or [])
    bar_on = cfg.trainer.get("enable_progress_bar", True)
    if with_callbacks:
        for conf in (cfg.get("callbacks") or {}).values():
            callback = hydra.utils.instantiate(conf)
            if bar_on or not isinstance(callback, ProgressBar):  # trainer.enable_progress_bar wins
                callbacks.append(callback)
    loggers: list[Logger] = [
        hydra.utils.instantiate(conf) for conf in (cfg.get("logger") or {}).values()
    ]
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def collect_metrics(trainer: Trainer, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Flat ``{split}/{name}`` floats from what the trainer last logged (curves left out)."""
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.split("/")[0] in prefixes:
            out[key] = float(value)
    return dict(sorted(out.items()))


def write_metrics(metrics: dict[str, float], output_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json`` atomically (NaN written as null) and return its path."""
    path = Path(output_dir) / "metrics.json"
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean, indent=2) + "\n")
    tmp.replace(path)
    return path


def write_predictions(rows: list[dict], output_dir: str | os.PathLike) -> Path | None:
    """Write ``predictions.csv`` (one row per test/ood sample) if there are rows."""
    if not rows:
        return None
    path = Path(output_dir) / "predictions.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def print_metrics(metrics: dict[str, float]) -> None:
    keys = ("acc", "oracle_acc", "final_acc", "mse", "avg_exit", "oracle_step", "esa", "csr")
    rows = []
    for split in ("val", "test", "ood"):
        vals = [metrics.get(f"{split}/{k}") for k in keys]
        if any(v is not None for v in vals):
            rows.append(f"{split:5s} " + " ".join(
                f"{k}={v:.4f}" for k, v in zip(keys, vals, strict=True) if v is not None))
    print("\n".join(rows))


def save_results(metrics: dict[str, float], predictions: list[dict], output_dir: str) -> None:
    """What every train/eval run leaves in its run dir: metrics.json and predictions.csv."""
    path = write_metrics(metrics, output_dir)
    write_predictions(predictions, output_dir)
    print_metrics(metrics)
    print(f"metrics: {path}")
