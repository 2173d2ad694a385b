"""Helpers shared by the benchmark scripts: compose the project's Hydra config from argv overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rds_act.build import build_module  # noqa: E402
from rds_act.cli import CONF_DIR  # noqa: E402
from rds_act.eval import load_checkpoint  # noqa: E402


def compose_from_argv(extra: list[str] | None = None) -> DictConfig:
    """The train config with ``key=value`` overrides from the command line (``ckpt_path=`` too)."""
    overrides = [*(extra or []), *sys.argv[1:]]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    return cfg


def build(cfg: DictConfig):
    """Module and datamodule; weights from ``ckpt_path`` when one is given."""
    if cfg.get("ckpt_path"):
        ckpt = load_checkpoint(cfg.ckpt_path)
        saved = ckpt["rds_act_config"]
        with open_dict(cfg):
            for key in ("task", "model", "act"):
                cfg[key] = saved[key]
        module, dm = build_module(cfg)
        module.load_state_dict(ckpt["state_dict"])
    else:
        module, dm = build_module(cfg)
    return module, dm


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
