"""ckpt_path=last and resuming in place, before Hydra starts (the end-to-end resume is in
test_training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rds_act.errors import ConfigError
from rds_act.resume import keep_earlier_attempt, resolve_last


def fake_run(root: Path, name: str, overrides: list[str], ckpt: bool = True) -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if ckpt:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return run_dir


def test_last_resumes_the_newest_run_of_the_same_overrides(tmp_path):
    fake_run(tmp_path, "2026-01-01_00-00-00_000001", ["act=plsd", "seed=1"])
    want = fake_run(tmp_path, "2026-01-02_00-00-00_000001", ["act=plsd", "seed=1"])
    fake_run(tmp_path, "2026-01-03_00-00-00_000001", ["act=plsd", "seed=2"])  # another config
    fake_run(tmp_path, "2026-01-04_00-00-00_000001", ["act=plsd", "seed=1"], ckpt=False)
    argv = ["seed=1", "act=plsd", "ckpt_path=last"]
    assert resolve_last(argv, tmp_path) == [
        "seed=1", "act=plsd", f"ckpt_path={want / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={want}"]
    # a run that was itself resumed (its overrides name a ckpt_path) is the same config
    again = fake_run(tmp_path, "2026-01-05_00-00-00_000001", ["act=plsd", "seed=1", "ckpt_path=x"])
    assert resolve_last(argv, tmp_path)[2] == f"ckpt_path={again / 'checkpoints' / 'last.ckpt'}"
    assert resolve_last(["seed=1"], tmp_path) == ["seed=1"]  # no `last`: unchanged


def test_last_without_a_matching_run_or_in_a_sweep_is_one_error(tmp_path):
    fake_run(tmp_path, "a", ["act=plsd"])
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no run under .* with these overrides"):
        resolve_last(["act=fixed", "ckpt_path=last"], tmp_path)
    with pytest.raises(ConfigError, match="in a sweep"):
        resolve_last(["-m", "act=plsd", "ckpt_path=last"], tmp_path)


def test_resuming_in_place_keeps_each_earlier_attempt(tmp_path):
    run_dir = fake_run(tmp_path, "run", ["trainer.max_epochs=2"])
    keep_earlier_attempt([f"hydra.run.dir={run_dir}"])
    (run_dir / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=4\n")
    keep_earlier_attempt([f"hydra.run.dir={run_dir}"])
    kept = sorted((run_dir / ".hydra").glob("attempt-*/overrides.yaml"))
    assert [p.read_text() for p in kept] == ["- trainer.max_epochs=2\n", "- trainer.max_epochs=4\n"]
    keep_earlier_attempt([f"hydra.run.dir={tmp_path / 'new'}"])  # a new dir: nothing to keep
    assert not (tmp_path / "new").exists()


def test_no_run_dir_is_overwritten_except_by_its_own_resume(tmp_path, capsys):
    """Through the entry points: training or evaluating into a dir that holds a run is one line
    (exit 2) and leaves that run's files untouched; resuming it in place is allowed, unless the
    resume would train something else (one line, nothing touched); a sweep dir
    with earlier jobs is refused."""
    import json

    from helpers import TINY, run_cli, run_entry

    run = tmp_path / "run"
    proc = run_cli("rds_act.train", [*TINY, "callbacks=default", "trainer.max_epochs=1",
                                     "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    ckpt = run / "checkpoints" / "last.ckpt"
    for module, args in (("rds_act.train", [*TINY, f"hydra.run.dir={run}"]),
                         ("rds_act.eval", [f"ckpt_path={ckpt}", f"hydra.run.dir={run}"])):
        proc = run_cli(module, args, tmp_path)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and "holds another run" in errors[0], proc.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # a resume that would train something else is one line naming the value; nothing changes
    for extra, named in (("optimizer.lr=1000000.0", "optimizer.lr=0.003, but this command sets "
                                                    "optimizer.lr=1000000.0"),
                         ("act=fixed", "act._target_='rds_act.act.PLSD'"), ("seed=3", "seed=0")):
        code, _, err = run_entry("rds_act.train", [
            *TINY, "callbacks=default", "trainer.max_epochs=2", f"hydra.run.dir={run}",
            f"ckpt_path={ckpt}", extra], capsys, tmp_path)
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == 2 and len(errors) == 1 and named in errors[0], err[-2000:]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    proc = run_cli("rds_act.train", [*TINY, "callbacks=default", "trainer.max_epochs=2",
                                     "trainer.enable_progress_bar=false", f"hydra.run.dir={run}",
                                     f"ckpt_path={ckpt}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]  # its own resume
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    (tmp_path / "sweep" / "0").mkdir(parents=True)
    (tmp_path / "sweep" / "0" / "metrics.json").write_text("{}")
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    proc = run_cli("rds_act.train", ["-m", "act=fixed,plsd", sweep], tmp_path)
    assert proc.returncode == 2 and "already holds the jobs of a sweep" in proc.stderr
