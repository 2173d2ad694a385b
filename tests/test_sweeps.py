"""Sweeps: an Optuna search returns its objective; the submitit launcher runs each job as its own
process; a missing plug-in is one line naming the extra; a bad job is refused before any runs, a
job that fails while running is recorded and the others run on, and the launcher's and sweeper's
settings are one line each (rds_act/sweep.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import TINY, run_cli, run_entry

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


def test_a_job_that_fails_while_running_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Through the shell: job 0 diverges (a non-finite loss only training shows), job 1 still
    runs and completes; the sweep names the failed job, sums up, and exits 2."""
    sweep = tmp_path / "sweep"
    args = ["-m", "optimizer.lr=1e30,0.003", *TINY, "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]
    proc = run_cli("rds_act.train", args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    records = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [r["status"] for r in records] == ["failed", "completed"]
    assert "non-finite" in records[0]["reason"] and "test/acc" in records[1]
    lines = proc.stderr.splitlines()
    assert any(ln.startswith("sweep job 0 (optimizer.lr=1e+30): failed: non-finite") for ln in lines)
    assert f"sweep {sweep}: 2 jobs: 1 completed, 1 failed" in lines


@pytest.mark.parametrize("args, message", [
    (["seed=0,-1"], r"sweep job 1 of 2 \(seed=-1\): seed=-1 is not allowed; .*no job was run"),
    (["act=fixed,plsd", "optimizer.lr=0.003,-1"],
     r"sweep job 1 of 4 \(act=fixed optimizer.lr=-1\): optimizer.lr=-1 is not allowed"),
    (["hydra/sweeper=optuna", "hydra.sweeper.n_trials=-1"],
     r"hydra.sweeper.n_trials=-1 is not allowed; allowed: an integer >= 1"),
    (["hydra/launcher=slurm"], r"hydra/launcher=slurm .* no `sbatch` .*hydra/launcher=local"),
    (["hydra/launcher=local", "hydra.launcher.timeout_min=abc"],
     r"hydra.launcher.timeout_min=abc; Value 'abc' of type 'str' could not be converted to Integer"),
    (["hydra/launcher=local", "hydra.launcher.cpus_per_task=0"],
     r"hydra.launcher.cpus_per_task=0 is not allowed; allowed: an integer >= 1"),
    (["hydra/launcher=ray"], r"Could not find 'hydra/launcher/ray'; allowed options in "
                             r"'hydra/launcher': basic, local, slurm"),
])
def test_a_bad_sweep_is_one_line_and_runs_nothing(tmp_path, capsys, monkeypatch, args, message):
    import re

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no sbatch, as on this machine
    sweep = tmp_path / "sweep"
    code, out, err = run_entry("rds_act.train", ["-m", *args, *TINY, f"hydra.sweep.dir={sweep}"],
                               capsys, tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), err[-2000:]
    assert lines[0].startswith("error: ") and not sweep.exists()
