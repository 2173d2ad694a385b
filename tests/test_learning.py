"""Short real training runs: every strategy learns something on both tasks (slow: ~1 min each)."""

from __future__ import annotations

import math

import lightning as L
import pytest

from rds_act.build import build_module, build_trainer

ACTS = ["fixed", "plsd", "better_plsd", "overthink", "qlearning", "ponder", "act_graves"]
BUDGET = [
    "task.datamodule.n_train=4096", "task.datamodule.n_val=256", "task.datamodule.n_test=1000",
    "task.datamodule.n_ood=256", "trainer.max_epochs=8", "logger=none", "callbacks=none",
    "trainer.enable_progress_bar=false",
]


def fit_and_test(cfg) -> dict[str, float]:
    L.seed_everything(0)
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# Known failure, kept visible: training the answer only at each sample's own t* leaves the RPC
# backbone near chance at this budget (final_acc ~2-3% vs ~6% for plsd; oracle_acc looks good
# only because t* picks the luckiest step). strict: the test reports when that changes.
T_STAR_ONLY = pytest.mark.xfail(strict=True, reason="loss at t* alone does not train RPC here")
RPC_ACTS = [pytest.param(a, marks=T_STAR_ONLY) if a in ("better_plsd", "overthink") else a for a in ACTS]


@pytest.mark.slow
@pytest.mark.parametrize("act", RPC_ACTS)
def test_short_run_beats_chance_on_rpc(compose_cfg, act):
    metrics = fit_and_test(compose_cfg("task=rpc", f"act={act}", *BUDGET))
    chance = 1 / 64
    assert metrics["test/acc"] > 2 * chance, metrics["test/acc"]
    assert 1.0 <= metrics["test/avg_exit"] <= 8.0


@pytest.mark.slow
@pytest.mark.parametrize("act", ACTS)
def test_short_run_learns_sparse_transform(compose_cfg, act):
    cfg = compose_cfg("task=sparse_transform", f"act={act}", *BUDGET)
    metrics = fit_and_test(cfg)
    # copying x through (right on the 80% of coordinates the rule leaves alone) is the baseline a
    # model that learned nothing about the rule would reach
    data = build_module(cfg)[1].make_split("test")
    copy_mse = float(((data["x"] - data["y"]) ** 2).mean())
    assert math.isfinite(metrics["test/mse"])
    assert metrics["test/mse"] < 0.8 * copy_mse, (metrics["test/mse"], copy_mse)
