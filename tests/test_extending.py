"""A user's own task, strategy, exit rule, optimizer and model, kept outside the package
(tests/fixtures/outside_project: a package ``my_ext`` and a ``conf/`` dir), reach every entry
point the way docs/extending.md says: ``--config-dir`` or ``hydra.searchpath`` for the yaml,
PYTHONPATH for the code. Run from a copy of that project outside the checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_entry

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "outside_project"
QUIET = ["trainer.enable_progress_bar=false", "logger=csv", "model.d_model=16"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user") / "project"
    shutil.copytree(FIXTURE, root)
    return root


def run(project: Path, entry: str, *args: str, pythonpath: bool = True) -> subprocess.CompletedProcess:
    """``python -m entry`` (or a script) in the project dir with the project on PYTHONPATH; with
    ``pythonpath=False`` from the dir above it (``-m`` puts the working dir on the path)."""
    env = {**os.environ, "PYTHONPATH": str(project) if pythonpath else ""}
    cmd = [sys.executable, *(["-m", entry] if not entry.endswith(".py") else [entry]), *args]
    cwd = project if pythonpath else project.parent
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(project: Path) -> Path:
    """rds-act-train with the user's task, strategy, model and optimizer, from --config-dir."""
    proc = run(project, "rds_act.train", "--config-dir", "conf", "task=majority", "act=halt_at",
               "model=twice", "optimizer=sgd", "trainer.max_epochs=2", *QUIET, "hydra.run.dir=runs/own")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return project / "runs" / "own"


def test_train_uses_the_users_task_strategy_model_and_optimizer(trained: Path):
    m = metrics(trained)
    assert m["test/avg_exit"] == 2.0 and m["ood/avg_exit"] == 2.0  # HaltAt(step=2) decided
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = ckpt["rds_act_config"]
    assert saved["task"]["datamodule"]["_target_"] == "my_ext.tasks.MajorityDataModule"
    assert saved["model"]["_target_"] == "my_ext.models.TwiceDynTRM"
    assert saved["choices"]["act"] == "halt_at"
    assert ckpt["optimizer_states"][0]["param_groups"][0]["momentum"] == 0.9  # torch.optim.SGD
    assert any(url.endswith("/conf") for url in saved["searchpath"])


def test_eval_finds_the_users_groups_again_and_takes_their_overrides(project: Path, trained: Path):
    # no --config-dir here: the checkpoint remembers the config dirs it was trained with
    proc = run(project, "rds_act.eval", f"ckpt_path={trained}/checkpoints/last.ckpt", "act.step=3",
               "hydra.run.dir=runs/eval_step3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics(project / "runs" / "eval_step3")["test/avg_exit"] == 3.0


def test_eval_with_the_users_exit_rule(project: Path, trained: Path):
    # ConfidentExit(threshold=0.0): the top probability always exceeds 0, so every sample exits at 1
    proc = run(project, "rds_act.eval", f"ckpt_path={trained}/checkpoints/last.ckpt",
               "eval.exit_rule=my_ext.exits.ConfidentExit", "eval.threshold=0.0",
               "hydra.run.dir=runs/eval_rule")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics(project / "runs" / "eval_rule")["test/avg_exit"] == 1.0
    proc = run(project, "rds_act.eval", f"ckpt_path={trained}/checkpoints/last.ckpt",
               "eval.exit_rule={_target_: my_ext.exits.ConfidentExit, threshold: 2.0}",
               "hydra.run.dir=runs/eval_rule_dict")  # never confident enough: every step runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics(project / "runs" / "eval_rule_dict")["test/avg_exit"] == 3.0
    line = one_error_line(run(project, "rds_act.eval", f"ckpt_path={trained}/checkpoints/last.ckpt",
                              "eval.exit_rule=my_ext.exits.Confident", "hydra.run.dir=runs/bad_rule"))
    assert "my_ext.exits.Confident" in line and "no 'Confident'" in line
    assert not (project / "runs" / "bad_rule").exists()


def test_the_users_exit_rule_is_calibrated_over_the_thresholds_it_is_given(project: Path, trained: Path):
    # 2.0 never exits (every step runs), 0.0 exits at step 1; at max_drop 0.99 both are certified
    # and the calibration takes the more aggressive one
    ckpt = f"ckpt_path={trained}/checkpoints/last.ckpt"
    proc = run(project, "rds_act.eval", ckpt, "eval.exit_rule=my_ext.exits.ConfidentExit",
               "eval.calibrate.max_drop=0.99", "eval.calibrate.candidates=[2.0,0.0]",
               "hydra.run.dir=runs/eval_calibrated")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = metrics(project / "runs" / "eval_calibrated")
    assert m["calibrate/threshold"] == 0.0 and m["calibrate/tested"] == 2
    assert m["test/avg_exit"] == 1.0
    # a count of candidates needs a grid the rule does not have: one line that says to list them
    line = one_error_line(run(project, "rds_act.eval", ckpt, "eval.exit_rule=my_ext.exits.ConfidentExit",
                              "eval.calibrate.max_drop=0.1", "hydra.run.dir=runs/bad_calibration"))
    assert "eval.calibrate.candidates=40" in line and "give them as a list" in line


def test_sweep_and_report_over_the_users_options(project: Path):
    searchpath = f"hydra.searchpath=[file://{project / 'conf'}]"
    proc = run(project, "rds_act.train", "-m", searchpath, "task=majority", "act=halt_at,fixed",
               "trainer.max_epochs=1", *QUIET, "hydra.sweep.dir=multirun/own")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(project, "rds_act.report", "multirun/own", "hydra.run.dir=runs/report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (project / "runs" / "report" / "summary.csv").read_text()
    assert "halt_at" in summary and "fixed" in summary and "majority" in summary


def test_a_script_composes_with_the_users_config_dir(project: Path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_learning.py"
    proc = run(project, str(script), "--config-dir", "conf", "task=majority", "act=halt_at",
               "model.d_model=16", "trainer.max_epochs=1", "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]


def entry_error_line(result: tuple[int, str, str]) -> str:
    code, _, err = result
    assert code == 2, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_the_users_options_are_listed_and_their_mistakes_are_one_line(project: Path, capsys):
    # the entry point's own code in this process (its pre-flight reads no user module), then one
    # mistake that needs the user's package on the path through a real interpreter
    line = entry_error_line(run_entry("rds_act.train", ["--config-dir", "conf", "act=halt_att"],
                                      capsys, project))
    assert "halt_at" in line and "plsd" in line  # the user's options beside the package's
    line = entry_error_line(run_entry("rds_act.train", ["hydra.searchpath=[file:///no/such/dir]",
                                                        "task=majority"], capsys, project))
    assert "/no/such/dir" in line and "not a directory" in line
    assert importlib.util.find_spec("my_ext") is None  # not importable here: PYTHONPATH unset
    line = entry_error_line(run_entry("rds_act.train", [
        "--config-dir", str(project / "conf"), "task=majority",
        f"hydra.run.dir={project}/runs/no_path"], capsys, project.parent))
    assert "task.datamodule._target_" in line and "PYTHONPATH" in line
    assert not (project / "runs" / "no_path").exists()
    line = one_error_line(run(project, "rds_act.train", "--config-dir", "conf", "task=majority",
                              "act=halt_at", "+act.every=2", "hydra.run.dir=runs/bad_arg"))
    assert line == "error: act.every is not a setting of my_ext.strategies.HaltAt; allowed: step"
    assert not (project / "runs" / "bad_arg").exists()
    # the user's own type hint is the schema: `step: int`
    line = one_error_line(run(project, "rds_act.train", "--config-dir", "conf", "task=majority",
                              "act=halt_at", "act.step=two", "hydra.run.dir=runs/bad_type"))
    assert line == "error: act.step='two' is not allowed; allowed: an integer"
    assert not (project / "runs" / "bad_type").exists()


def test_configs_shipped_inside_a_package_are_found_by_pkg_url(tmp_path, monkeypatch):
    from rds_act.cli import group_options

    (tmp_path / "ext_pkg" / "conf" / "act").mkdir(parents=True)
    (tmp_path / "ext_pkg" / "__init__.py").write_text("")
    (tmp_path / "ext_pkg" / "conf" / "act" / "mine.yaml").write_text("_target_: x.Y\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "mine" in group_options("act", ["hydra.searchpath=[pkg://ext_pkg.conf]"])
    assert "mine" not in group_options("act", [])
    assert "plsd" in group_options("act", ["hydra.searchpath=[pkg://ext_pkg.conf]"])
