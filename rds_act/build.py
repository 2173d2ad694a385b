"""Turn a composed config into objects; shared by the train and eval entry points."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import hydra
from lightning import Callback, LightningDataModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from rds_act.errors import ConfigError
from rds_act.module import ACTLitModule

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# groups whose option names are checked before Hydra starts (hydra/* come from plugins)
CHECKED_GROUPS = ("task", "model", "act", "optimizer", "trainer", "logger", "callbacks",
                  "experiment", "hparams_search", "eval_exit")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(argv: list[str]) -> None:
    """Fail in one line on ``act=nope``-style overrides, naming the bad value and the options."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in CHECKED_GROUPS or "(" in value:
            continue
        options = group_options(key)
        for choice in (v.strip() for v in value.split(",")):
            if choice and choice != "null" and choice not in options:
                raise ConfigError(f"unknown {key} {choice!r}; allowed: {', '.join(options)}")


def one_line_errors(fn: Callable) -> Callable:
    """Report bad input (a ConfigError anywhere in the cause chain) as one line and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - we re-raise everything that is not bad input
            err: BaseException | None = exc
            while err is not None and not isinstance(err, ConfigError | FloatingPointError):
                err = err.__cause__ or err.__context__
            if err is None:
                raise
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def build_module(cfg: DictConfig, exit_rule: Any = None) -> tuple[ACTLitModule, LightningDataModule]:
    """The datamodule and the LightningModule (backbone + strategy + task loss)."""
    datamodule = hydra.utils.instantiate(cfg.task.datamodule)
    model = hydra.utils.instantiate(cfg.model)
    strategy = hydra.utils.instantiate(cfg.act)
    task_loss = hydra.utils.instantiate(cfg.task.loss)
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    ood_T_max = int(cfg.task.get("ood_T_max") or model.T_max)
    if ood_T_max < model.T_max:
        raise ConfigError(f"task.ood_T_max={ood_T_max} must be >= T_max={model.T_max}")
    module = ACTLitModule(
        model, strategy, task_loss, optimizer, ood_T_max=ood_T_max, exit_rule=exit_rule,
        run_config=OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
        ),
    )
    return module, datamodule


def build_trainer(cfg: DictConfig, with_callbacks: bool = True) -> Trainer:
    callbacks: list[Callback] = []
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


def print_metrics(metrics: dict[str, float]) -> None:
    keys = ("acc", "oracle_acc", "final_acc", "mse", "avg_exit", "oracle_step", "esa", "csr")
    rows = []
    for split in ("val", "test", "ood"):
        vals = [metrics.get(f"{split}/{k}") for k in keys]
        if any(v is not None for v in vals):
            rows.append(f"{split:5s} " + " ".join(
                f"{k}={v:.4f}" for k, v in zip(keys, vals, strict=True) if v is not None))
    print("\n".join(rows))
