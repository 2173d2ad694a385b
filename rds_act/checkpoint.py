"""Loading a checkpoint written by rds-act-train, in one place: for rds-act-eval, the benchmark
scripts and notebooks (``load_lit_module``; Lightning's ``ACTLitModule.load_from_checkpoint``
points here).

A checkpoint carries the config it was trained with (``rds_act_config``, group choices included).
Model, task, act, optimizer and seed come from there; whatever of them the user names on the
command line overrides it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from rds_act.build import build_module
from rds_act.cli import TRAINED_GROUPS, parse_override
from rds_act.errors import ConfigError

if TYPE_CHECKING:
    from lightning import LightningDataModule

    from rds_act.module import ACTLitModule

FROM_CHECKPOINT = (*TRAINED_GROUPS, "seed")


@lru_cache(maxsize=1)  # the entry point peeks at the group choices, then loads the weights
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


def with_checkpoint_choices(argv: list[str]) -> list[str]:
    """Compose with the groups the checkpoint was trained with (``act=better_plsd`` ...), so that
    an override such as ``act.threshold=0.9`` finds its key; groups the user names win."""
    path = next((v for k, v, _ in map(parse_override, argv) if k == "ckpt_path"), None)
    try:
        choices = load_checkpoint(path)["rds_act_config"].get("choices", {})
    except ConfigError:
        return argv  # loading reports the bad path in one line
    given = {parse_override(a)[0] for a in argv}
    return argv + [f"{g}={c}" for g, c in choices.items() if c and g not in given]


def merge_run_config(cfg: DictConfig, saved: dict, overrides: list[str]) -> DictConfig:
    """``cfg`` with model/task/act/optimizer/seed taken from the checkpoint's saved config, then
    the user's command-line overrides of those keys re-applied on top."""
    merged = cfg.copy()
    OmegaConf.set_struct(merged, False)
    for key in FROM_CHECKPOINT:
        if key in saved:
            merged[key] = saved[key]
    choices = saved.get("choices", {})
    for override in overrides:
        key, value, _ = parse_override(override)
        if choices.get(key) == value:  # the checkpoint's own group choice: nothing to override
            continue
        if key.split(".")[0] in FROM_CHECKPOINT:
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    return merged


def load_module(
    cfg: DictConfig, overrides: list[str]
) -> tuple[ACTLitModule, LightningDataModule, DictConfig]:
    """Module (with the checkpoint's weights), datamodule and the merged config for
    ``cfg.ckpt_path``, seeded with the run's seed first (as training was), so that evaluating
    the same checkpoint twice gives the same metrics; a checkpoint that does not fit the config
    fails in one line."""
    ckpt = load_checkpoint(cfg.get("ckpt_path"))
    cfg = merge_run_config(cfg, ckpt["rds_act_config"], overrides)
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
    return module, datamodule, cfg


def load_lit_module(path: str, **overrides: object) -> ACTLitModule:
    """The trained module alone, for notebooks: ``load_lit_module(ckpt, **{"act.threshold": 0.9})``
    (dotted keys as on the command line; the checkpoint's own config fills in the rest)."""
    cfg = OmegaConf.create({"ckpt_path": str(path)})
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    module, _, _ = load_module(cfg, [f"{k}={v}" for k, v in overrides.items()])
    return module
