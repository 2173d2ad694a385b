"""Loading a checkpoint written by rds-act-train, in one place: for rds-act-eval, the benchmark
scripts and notebooks (``load_lit_module``; Lightning's ``ACTLitModule.load_from_checkpoint``
points here).

A checkpoint carries the config it was trained with (``rds_act_config``, group choices included).
Model, task, act, optimizer and seed come from there; whatever of them the user names on the
command line overrides it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from rds_act.build import build_module
from rds_act.cli import TRAINED_GROUPS, parse_override, search_path, search_path_arg
from rds_act.data.base import first_rows, named_loaders
from rds_act.errors import ConfigError
from rds_act.memory import check_memory
from rds_act.validate import validate_config

if TYPE_CHECKING:
    from lightning import LightningDataModule

    from rds_act.module import ACTLitModule

FROM_CHECKPOINT = (*TRAINED_GROUPS, "seed")


@lru_cache(maxsize=2)  # the entry point peeks at the group choices, then loads the weights
def load_checkpoint(path: str | None, key: str = "ckpt_path") -> dict:
    """Read a checkpoint written by rds-act-train, or fail in one line saying why (naming the
    config ``key`` it was given as)."""
    if not path or not Path(path).is_file():
        raise ConfigError(f"{key}={path!r} is not an existing file; pass a .ckpt from a run dir")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any read failure means a corrupt file
        raise ConfigError(
            f"{key}={path!r} is not a readable checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "rds_act_config" not in ckpt:
        raise ConfigError(f"{key}={path!r} was not written by rds-act-train (no config inside)")
    return ckpt


def with_checkpoint_choices(argv: list[str]) -> list[str]:
    """Compose with the groups the checkpoint was trained with (``act=better_plsd`` ...), so that
    an override such as ``act.threshold=0.9`` finds its key; groups the user names win. A run
    trained with the user's own config dirs gets them back unless the command line names some."""
    path = next((v for k, v, _ in map(parse_override, argv) if k == "ckpt_path"), None)
    try:
        saved = load_checkpoint(path)["rds_act_config"]
    except ConfigError:
        return argv  # loading reports the bad path in one line
    choices, searchpath = saved.get("choices", {}), saved.get("searchpath") or []
    given = {parse_override(a)[0] for a in argv}
    extra = [f"{g}={c}" for g, c in choices.items() if c and g not in given]
    if searchpath and not search_path(argv):
        extra.append(search_path_arg(searchpath))
    return argv + extra


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
    validate_config(cfg)  # before the seed is used
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module, datamodule = build_module(cfg, validated=True)
    check_fits(module, cfg.ckpt_path)
    module.load_state_dict(ckpt["state_dict"])
    check_evaluates(module, datamodule, cfg.ckpt_path, ckpt["rds_act_config"])
    check_memory(module, datamodule, cfg, training=False)  # once the model can read the task
    return module, datamodule, cfg


def check_evaluates(module: ACTLitModule, datamodule: LightningDataModule, path: str,
                    saved: dict) -> None:
    """Weights of the right shapes can still meet a task whose inputs they cannot read (an RPC
    checkpoint asked to evaluate parity): two samples of each test split through the model and
    the loss first, so that is one line naming both tasks, not a traceback in the test pass."""
    datamodule.setup("test")
    module.eval()
    for split, loader in named_loaders(datamodule.test_dataloader(), "test").items():
        batch = first_rows(loader)
        if batch is None:  # a datamodule of a user's own: its test pass will tell
            continue
        try:
            with torch.no_grad():
                module.stack(batch, min(module.steps_for(split), 2))  # reading is enough
        except (RuntimeError, IndexError, ValueError) as exc:
            trained = saved.get("choices", {}).get("task") or "?"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"ckpt_path={path!r} (trained with task={trained}) cannot evaluate "
                              f"this task's {split} split: {first}; allowed: a task whose inputs and "
                              "targets have the form it was trained on (its own task, by default)") from None


def check_fits(module: ACTLitModule, path: str, key: str = "ckpt_path") -> None:
    """Fail in one line unless the checkpoint at ``path`` has finite weights of exactly the
    module's names and shapes; a mismatch names the task and act it was trained with."""
    ckpt = load_checkpoint(path, key)
    weights = ckpt["state_dict"]
    bad = [k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(f"{key}={path!r} holds non-finite weights ({bad[0]}); "
                          "use a checkpoint from before the run diverged")
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or extra or shapes:
        saved = ckpt["rds_act_config"]
        origin = ", ".join(f"{g}={saved.get('choices', {}).get(g) or '?'}" for g in ("task", "act"))
        what = (f"{shapes[0]} is {tuple(weights[shapes[0]].shape)} there, "
                f"{tuple(own[shapes[0]].shape)} here" if shapes else
                f"{(missing or extra)[0]} is {'missing' if missing else 'unexpected'}")
        raise ConfigError(f"{key}={path!r} (trained with {origin}, d_model="
                          f"{saved.get('model', {}).get('d_model', '?')}) does not fit this "
                          f"config: {what}")


def init_weights(module: ACTLitModule, path: str) -> int:
    """``init_from=<ckpt>``: start a new run from a checkpoint's weights (backbone, readout and
    halting head) with a fresh optimizer, schedule and curriculum: a fine-tune, a new learning-rate
    schedule or another strategy on a trained backbone, where a resume would continue the old
    run. The weights must fit this config exactly. ``train/samples`` goes on from the samples
    those weights were trained on, so a curve and a budget count them; returns that number."""
    check_fits(module, path, key="init_from")
    ckpt = load_checkpoint(path, "init_from")
    module.load_state_dict(ckpt["state_dict"])
    module.samples_seen = int(ckpt.get("rds_act_samples_seen", 0))
    module.applications_seen = int(ckpt.get("rds_act_applications_seen", 0))
    return module.samples_seen


def load_lit_module(path: str, **overrides: object) -> ACTLitModule:
    """The trained module alone, for notebooks: ``load_lit_module(ckpt, **{"act.threshold": 0.9})``
    (dotted keys as on the command line; the checkpoint's own config fills in the rest)."""
    cfg = OmegaConf.create({"ckpt_path": str(path)})
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    module, _, _ = load_module(cfg, [f"{k}={v}" for k, v in overrides.items()])
    return module


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file and renamed over the old one, so a crash or a full disk
    mid-write never replaces a good ``last.ckpt`` with a truncated one."""

    def save_checkpoint(self, checkpoint: dict, path: str | os.PathLike,
                        storage_options: object | None = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
