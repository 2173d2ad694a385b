"""``rds-act-eval ckpt_path=...``: re-evaluate a checkpoint into a fresh run dir's metrics.json.

The checkpoint carries the config it was trained with; model, task, act and optimizer come from
there, and whatever of them the user names on the command line overrides it.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rds_act.build import (
    build_module,
    build_trainer,
    collect_metrics,
    save_results,
)
from rds_act.cli import CONF_DIR, check_group_choices, one_line_errors
from rds_act.errors import ConfigError

FROM_CHECKPOINT = ("task", "model", "act", "optimizer", "seed")


@lru_cache(maxsize=1)  # main() peeks at the group choices, evaluate() loads the weights
def load_checkpoint(path: str | None) -> dict:
    """Read a checkpoint written by rds-act-train, or fail in one line saying why."""
    if not path or not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path!r} is not an existing file; pass a .ckpt from a run dir")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any read failure means a corrupt file
        raise ConfigError(
            f"ckpt_path={path!r} is not a readable checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "rds_act_config" not in ckpt:
        raise ConfigError(f"ckpt_path={path!r} was not written by rds-act-train (no config inside)")
    return ckpt


def merge_run_config(cfg: DictConfig, saved: dict, overrides: list[str]) -> DictConfig:
    """The eval config: ``cfg`` with model/task/act/optimizer/seed taken from the checkpoint's
    saved config, then the user's command-line overrides of those keys re-applied on top."""
    merged = cfg.copy()
    OmegaConf.set_struct(merged, False)
    for key in FROM_CHECKPOINT:
        if key in saved:
            merged[key] = saved[key]
    choices = saved.get("choices", {})
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if choices.get(key) == value:  # the checkpoint's own group choice: nothing to override
            continue
        if key.split(".")[0] in FROM_CHECKPOINT:
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    return merged


@one_line_errors
def evaluate(cfg: DictConfig) -> dict[str, float]:
    ckpt = load_checkpoint(cfg.get("ckpt_path"))
    cfg = merge_run_config(cfg, ckpt["rds_act_config"], list(HydraConfig.get().overrides.task))
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule = build_module(cfg)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch, not the header
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r} does not fit the model config: {first}"
        ) from None
    trainer = build_trainer(cfg, with_callbacks=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = collect_metrics(trainer, ("test", "ood"))
    save_results(metrics, module.predictions, HydraConfig.get().runtime.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def with_checkpoint_choices(argv: list[str]) -> list[str]:
    """Compose with the groups the checkpoint was trained with (``act=better_plsd`` ...), so that
    an override such as ``act.lam=0.9`` finds its key; groups the user names win."""
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("ckpt_path=")), None)
    try:
        choices = load_checkpoint(path)["rds_act_config"].get("choices", {})
    except ConfigError:
        return argv  # evaluate() reports the bad path in one line
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    return argv + [f"{g}={c}" for g, c in choices.items() if c and g not in given]


def main() -> None:
    one_line_errors(check_group_choices)(sys.argv[1:])
    sys.argv[1:] = with_checkpoint_choices(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
