"""Sweeps beyond the basic launcher: an Optuna search returns its objective; the submitit launcher
runs each job as its own process; a missing plug-in is one line naming the extra."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import TINY, run_cli

from rds_act import cli
from rds_act.errors import ConfigError


def test_optuna_search_optimises_the_declared_objective(tmp_path):
    """Two trials of hparams_search=rpc_optuna: each returns val/acc - 0.02 x val/avg_exit, and
    the study's best value is the best trial's objective, recomputed from its metrics.json."""
    args = ["hparams_search=rpc_optuna", "hydra.sweeper.n_trials=2", *TINY, "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = run_cli("rds_act.train", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert {"optimizer.lr", "act.beta", "act.threshold"} <= set(best["best_params"]), best
    trials = [json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    values = [m["val/acc"] - 0.02 * m["val/avg_exit"] for m in trials]
    assert best["best_value"] == pytest.approx(max(values))


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path):
    args = ["-m", "hydra/launcher=local", "act=fixed,plsd", *TINY, "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = run_cli("rds_act.train", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # submitit ran them, not the basic launcher


@pytest.mark.parametrize("override, extra", [("hparams_search=rpc_optuna", "sweep"),
                                             ("hydra/launcher=slurm", "cluster")])
def test_a_missing_plugin_is_one_line_naming_the_extra(monkeypatch, override, extra):
    cli.check_plugins([override])  # installed here: passes
    monkeypatch.setattr(cli, "_has", lambda module: False)
    with pytest.raises(ConfigError, match=rf"{override} needs the Hydra plug-in .*rds-act\[{extra}\]"):
        cli.check_plugins([override])
    cli.check_plugins(["hydra/launcher=basic", "hparams_search=null"])  # nothing needed
