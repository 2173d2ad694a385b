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
