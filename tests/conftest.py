"""Shared fixtures: compose the real configs the way the entry points do, without a Hydra app."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from rds_act.cli import CONF_DIR


def pytest_configure(config):
    """Under pytest-xdist (``-n auto``, the default addopts) every worker, and every entry point it
    starts, uses one thread, so the workers share the cores instead of oversubscribing them."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def generated_set_cache(tmp_path_factory):
    """Cached benchmark sets (task=sudoku, ...) go to a fresh dir, never the user's cache;
    subprocesses of the entry points inherit it."""
    import os

    old = os.environ.get("RDS_ACT_CACHE")
    os.environ["RDS_ACT_CACHE"] = str(tmp_path_factory.mktemp("rds_act_cache"))
    yield
    if old is None:
        os.environ.pop("RDS_ACT_CACHE", None)
    else:
        os.environ["RDS_ACT_CACHE"] = old


@pytest.fixture
def compose_cfg(tmp_path):
    """``compose_cfg(*overrides, config='train')`` -> a composed config whose outputs go to tmp."""

    def _compose(*overrides: str, config: str = "train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config, overrides=list(overrides), return_hydra_config=True)
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
