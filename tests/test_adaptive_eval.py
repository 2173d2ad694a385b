"""rds-act-eval eval.adaptive=true: the compacted per-sample path, checked and timed."""

from __future__ import annotations

import json

import pytest
from helpers import TINY, run_cli, run_entry


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    proc = run_cli("rds_act.train", [*TINY, "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                                     "callbacks=default", f"hydra.run.dir={root}/run"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, root / "run" / "checkpoints" / "last.ckpt"


def test_eval_runs_the_compacted_path_and_records_what_it_saves(checkpoint):
    root, ckpt = checkpoint
    proc = run_cli("rds_act.eval", [f"ckpt_path={ckpt}", "eval.adaptive=true", "eval.exit_rule=entropy",
                                    f"hydra.run.dir={root}/adaptive"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((root / "adaptive" / "metrics.json").read_text())
    for split, steps in (("test", 4), ("ood", 5)):  # rpc_small: T_max 4, ood_T_max 5
        assert m[f"adaptive/{split}/agree"] == 1.0  # every exit and answer as the unrolled path's
        assert m[f"adaptive/{split}/ideal_speedup"] == pytest.approx(steps / m[f"{split}/avg_exit"])
        assert m[f"adaptive/{split}/block_applications"] == pytest.approx(m[f"{split}/avg_exit"])
        assert m[f"adaptive/{split}/samples_per_s"] > 0 and m[f"adaptive/{split}/speedup"] > 0
        assert f"adaptive {split}:" in proc.stdout
    assert "warning" not in proc.stdout
    # without the switch (the training run's own test) nothing of it is recorded
    trained = json.loads((root / "run" / "metrics.json").read_text())
    assert "test/acc" in trained and not any(k.startswith("adaptive/") for k in trained)


@pytest.mark.parametrize("args, named", [
    (["eval.exit_rule=oracle"], "eval.exit_rule=oracle cannot decide step by step"),
    (["eval.adaptive=sometimes"], "eval.adaptive='sometimes' is not allowed; allowed: true or false"),
])
def test_adaptive_eval_with_what_cannot_run_it_is_one_line(checkpoint, capsys, args, named):
    root, ckpt = checkpoint
    adaptive = [] if any(a.startswith("eval.adaptive") for a in args) else ["eval.adaptive=true"]
    code, _, err = run_entry("rds_act.eval", [f"ckpt_path={ckpt}", *adaptive, *args,
                                              f"hydra.run.dir={root}/bad"], capsys, root)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and named in errors[0], err[-1500:]
    assert not (root / "bad").exists()
