"""scripts/probe_halting.py: its trace reproduces the model's own exits, and it reports both splits."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_script

from rds_act.train import train

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    module = importlib.import_module("probe_halting")
    monkeypatch.setattr(module, "FIT_SAMPLES", 64)
    monkeypatch.setattr(module, "FIT_ITERS", 5)
    return module


def test_exits_is_the_first_halting_step_or_the_last(probe):
    halt = torch.tensor([[False, True, False], [True, True, False], [False, False, False]])
    assert probe.exits(halt).tolist() == [2, 1, 3]


def test_probe_runs_on_a_checkpoint_and_its_own_exits_match_adaptive_forward(
        probe, compose_cfg, tmp_path, monkeypatch, capsys):
    cfg = compose_cfg("act=better_plsd", *[a for a in TINY if not a.startswith("callbacks")],
                      "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "test=false")
    train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(sys, "argv", ["probe", f"ckpt_path={ckpt}", "task.datamodule.n_test=40",
                                      "task.datamodule.n_ood=40"])
    module, dm = probe.build(probe.compose_from_argv())
    batch = dm.make_split("test")
    _, own, _ = probe.trace(module, batch, module.model.T_max)
    _, expected = module.model.adaptive_forward(batch, module.exit_rule)
    assert torch.equal(own, expected)
    probe.main()
    out = capsys.readouterr().out
    assert out.count("model's own halting") == 2 and out.count("probe, hidden") == 4
    assert "test: accuracy at each step" in out and "ood: accuracy at each step" in out


def test_probe_needs_a_checkpoint(probe, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["probe"])
    with pytest.raises(SystemExit, match="ckpt_path=<checkpoint> is required"):
        probe.main()



SCRIPTS_WITH_CONFIG = sorted(p.name for p in SCRIPTS.glob("*.py")
                             if p.name not in ("_common.py", "bench_ddp.py"))


BAD_SCRIPT_INPUT = [
    *[(s, "ckpt_path=/no/such.ckpt", "/no/such.ckpt") for s in SCRIPTS_WITH_CONFIG],
    ("probe_halting.py", "act=nope", "nope"), ("probe_halting.py", "model.nope=3", "model.nope"),
    ("bench_throughput.py", "batch_sizes=64,x", "batch_sizes='64,x'"),
    ("bench_datagen.py", "n=0", "n='0'"), ("bench_datagen.py", "task=sudoku", "task=sudoku")]


def assert_one_error_line(code: int, out: str, err: str, named: str) -> None:
    assert code == 2, err[-500:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], err
    assert out.strip() == "", out  # no table header as if a result followed


@pytest.mark.parametrize("script, arg, named", BAD_SCRIPT_INPUT)
def test_scripts_report_bad_input_in_one_line_with_exit_2(script, arg, named, capsys):
    """A bad override or checkpoint is one ``error:`` line naming it and exit 2, as in rds-act-*
    (each script's own entry code, run in this process)."""
    assert_one_error_line(*run_script(SCRIPTS / script, [arg], capsys), named)


def test_a_script_from_the_shell_reports_bad_input_in_one_line():
    """The same through a real interpreter (stderr and the exit status as a shell sees them)."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "probe_halting.py"), "act=nope"],
                          capture_output=True, text=True, timeout=300)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "nope")
