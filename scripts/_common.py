"""Helpers shared by the benchmark scripts: compose the project's Hydra config from argv overrides
and build from it (or from a checkpoint, the same way rds-act-eval does)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rds_act.build import build_module  # noqa: E402
from rds_act.checkpoint import load_module, with_checkpoint_choices  # noqa: E402
from rds_act.cli import (  # noqa: E402
    CONF_DIR,
    check_composes,
    check_group_choices,
    config_dir_as_search_path,
    one_line_errors,
)


def compose_from_argv(extra: list[str] | None = None) -> DictConfig:
    """The train config with ``key=value`` overrides from the command line (``ckpt_path=`` too:
    then composed with the checkpoint's own group choices, so ``act.threshold=0.9`` finds its key)."""
    argv = with_checkpoint_choices([*(extra or []), *sys.argv[1:]])
    check_group_choices(argv)
    check_composes(argv, "train")
    overrides = config_dir_as_search_path(argv)  # compose has no --config-dir
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    return cfg


def build(cfg: DictConfig):
    """Module and datamodule; with ``ckpt_path``, the checkpoint's config and weights (the
    command line's overrides on top, as in rds-act-eval)."""
    if not cfg.get("ckpt_path"):
        return build_module(cfg)
    module, dm, _ = load_module(cfg, sys.argv[1:])
    return module, dm


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_main(main) -> None:
    """A script's entry point: bad input (an unknown option or key, a missing, corrupt or foreign
    checkpoint, a value out of range) is one ``error:`` line and exit 2, as in ``rds-act-*``. A
    reader that stops early (``| head``) ends the script quietly, as it does ``cat``."""
    try:
        one_line_errors(main)()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(141) from None  # 128 + SIGPIPE, the shell's code for a closed reader
