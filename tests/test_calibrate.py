"""Calibrated exits (eval.calibrate.max_drop): the binomial test, the fixed-sequence choice of a
threshold on hand-built stacks, and the entry point on a trained checkpoint with its bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli

from rds_act.act import PLSD, Fixed, StepStack
from rds_act.act.calibrate import binomial_cdf, calibrate
from rds_act.errors import ConfigError
from rds_act.models.dyntrm import Unrolled


def test_binomial_cdf_matches_the_sum_by_hand():
    n, p = 20, 0.1
    by_hand = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(3))
    assert binomial_cdf(2, n, p) == pytest.approx(by_hand, rel=1e-12)
    assert binomial_cdf(0, 400, 0.001) == pytest.approx(0.999**400)
    assert binomial_cdf(5, 5, 0.3) == pytest.approx(1.0)


def halting_stack(n: int = 400, wrong_at_1: int = 40, sigma=(0.6, 0.9, 0.99)) -> StepStack:
    """Three steps; σ(halt) is ``sigma`` at steps 1..3 for every sample; every answer is
    right at steps 2 and 3, and ``wrong_at_1`` samples are wrong at step 1."""
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    halt = torch.tensor([logit(p) for p in sigma])[:, None].expand(3, n)
    logits = torch.stack([halt, torch.zeros(3, n)], -1)
    correct = torch.ones(3, n, dtype=torch.bool)
    correct[0, :wrong_at_1] = False
    unrolled = Unrolled(torch.zeros(3, n, 4), logits, torch.zeros(3, n, 2))
    return StepStack(unrolled, torch.zeros(3, n), correct)


def test_the_most_aggressive_certified_threshold_is_chosen():
    # exiting at step 1 loses 10% of the samples: above max_drop 0.05, so the sequence stops
    # before it and the chosen threshold exits at step 2, where nothing is lost
    cal = calibrate("halt_head", PLSD(), [halting_stack()], "classification", max_drop=0.05)
    assert 0.6 <= cal.threshold < 0.9 and cal.val_avg_exit == 2.0
    assert cal.val_harm == 0.0 and cal.val_drop == 0.0
    # a 10% loss is certified below 15% (P(X <= 40 | 400, 0.15) ~ 0.002 < delta): step 1
    cal = calibrate("halt_head", PLSD(), [halting_stack()], "classification", max_drop=0.15)
    assert cal.threshold < 0.6 and cal.val_avg_exit == 1.0 and cal.val_harm == pytest.approx(0.1)
    # 400 samples cannot certify a 0.1% risk even with no loss (0.999**400 > delta): no early exit
    cal = calibrate("halt_head", PLSD(), [halting_stack()], "classification", max_drop=0.001)
    assert cal.threshold is None and cal.val_avg_exit == 3.0
    assert math.isnan(cal.metrics()["calibrate/threshold"])


def test_a_saturated_head_gets_thresholds_between_its_steps():
    # a head sure at every step (σ 0.985, 0.995, 0.9995): exiting at step 1 loses 10%, at step 2
    # nothing. A grid even in σ jumps from 0.999 (step 3) to 0.975 (step 1, rejected) and so runs
    # every step; the logit grid has thresholds between 0.985 and 0.995, which exit at step 2
    stack = halting_stack(sigma=(0.985, 0.995, 0.9995))
    cal = calibrate("halt_head", PLSD(), [stack], "classification", max_drop=0.05)
    assert 0.985 <= cal.threshold < 0.995 and cal.val_avg_exit == 2.0 and cal.val_harm == 0.0


def test_the_logit_grid_ends_on_the_numbers_given():
    # metrics.json shows the chosen threshold: 0.999, not sigmoid(logit(0.999)) = 0.99899...
    from rds_act.act.calibrate import logit_grid

    grid = logit_grid(0.999, 0.05, 40)
    assert (grid[0], grid[-1], len(set(grid))) == (0.999, 0.05, 40)


def test_calibration_values_are_checked():
    with pytest.raises(ConfigError, match="eval.calibrate.max_drop=2.0 is out of range"):
        calibrate("halt_head", PLSD(), [halting_stack()], "classification", max_drop=2.0)
    with pytest.raises(ConfigError, match="eval.calibrate.candidates=1 is not allowed"):
        calibrate("halt_head", PLSD(), [halting_stack()], "classification", 0.05, candidates=1)
    from rds_act.act.calibrate import check_calibratable

    with pytest.raises(ConfigError, match="no probability threshold to calibrate"):
        check_calibratable("halt_head", Fixed(), None)
    with pytest.raises(ConfigError, match="only rules with a threshold can be calibrated"):
        check_calibratable("oracle", PLSD(), None)
    with pytest.raises(ConfigError, match="the calibration picks the threshold"):
        check_calibratable("entropy", PLSD(), 0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    proc = run_cli("rds_act.train", [*TINY, "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                                     "callbacks=default", f"hydra.run.dir={root}/run"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, root / "run" / "checkpoints" / "last.ckpt"


def test_rds_act_eval_calibrates_and_records_the_threshold(checkpoint):
    root, ckpt = checkpoint
    proc = run_cli("rds_act.eval", [f"ckpt_path={ckpt}", "eval.exit_rule=entropy",
                                    "eval.calibrate.max_drop=0.2", f"hydra.run.dir={root}/cal"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calibrated eval.exit_rule=entropy" in proc.stdout
    m = json.loads((root / "cal" / "metrics.json").read_text())
    assert m["calibrate/max_drop"] == 0.2 and m["calibrate/delta"] == 0.1
    assert m["calibrate/tested"] >= 1 and m["calibrate/val_harm"] < 0.2
    # the test pass ran with the chosen threshold: the same as giving it by hand
    proc = run_cli("rds_act.eval", [f"ckpt_path={ckpt}", "eval.exit_rule=entropy",
                                    f"eval.threshold={m['calibrate/threshold']!r}",
                                    f"hydra.run.dir={root}/by_hand"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_hand = json.loads((root / "by_hand" / "metrics.json").read_text())
    for key in ("test/acc", "test/avg_exit", "ood/acc", "ood/avg_exit"):
        assert m[key] == by_hand[key]


def test_bad_calibration_input_is_one_line(checkpoint):
    """Through rds-act-eval (the other combinations: test_calibration_values_are_checked)."""
    root, ckpt = checkpoint
    proc = run_cli("rds_act.eval", [f"ckpt_path={ckpt}", "eval.calibrate.max_drop=0.1",
                                    "eval.exit_rule=oracle", f"hydra.run.dir={root}/bad"], root)
    assert proc.returncode == 2 and "only rules with a threshold" in proc.stderr
    assert "Traceback" not in proc.stderr and not (root / "bad").exists()


def test_rds_act_train_tests_with_the_calibrated_exit(tmp_path):
    """eval.calibrate on rds-act-train: after fitting, the threshold is chosen on val on the
    checkpoint the test reads, and the run's own test is what rds-act-eval of that checkpoint
    with the same options reports."""
    args = [*TINY, "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "callbacks=default",
            "eval.exit_rule=entropy", "eval.calibrate.max_drop=0.2"]
    proc = run_cli("rds_act.train", [*args, f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calibrated eval.exit_rule=entropy" in proc.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["calibrate/max_drop"] == 0.2 and m["calibrate/tested"] >= 1
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    same = ["eval.exit_rule=entropy", "eval.calibrate.max_drop=0.2"]
    proc = run_cli("rds_act.eval", [f"ckpt_path={best}", *same, f"hydra.run.dir={tmp_path}/eval"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("calibrate/threshold", "calibrate/val_harm", "test/acc", "test/avg_exit", "ood/acc"):
        assert m[key] == again[key] or (math.isnan(m[key]) and math.isnan(again[key])), key


@pytest.mark.parametrize("extra, named", [
    (["eval.calibrate.max_drop=abc"], "eval.calibrate.max_drop='abc'"),
    (["eval.calibrate.max_drop=0.1", "eval.exit_rule=oracle"], "only rules with a threshold"),
    (["eval.calibrate.max_drop=0.1", "test=false"], "eval.calibrate.max_drop=0.1 with test=false"),
])
def test_rds_act_train_refuses_a_bad_calibration_before_training(tmp_path, extra, named):
    proc = run_cli("rds_act.train", [*TINY, *extra, f"hydra.run.dir={tmp_path}/bad"], tmp_path)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and named in lines[0], lines
    assert not (tmp_path / "bad").exists()


SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "exit_rules_table.py"


@pytest.mark.slow  # two calibrated evals; the table's rows are checked in-process below
def test_exit_rules_table_calibrates_each_rule_and_counts_what_cannot(checkpoint):
    root, _ = checkpoint
    proc = subprocess.run([sys.executable, str(SCRIPT), str(root / "run"), "rules=entropy,halt_head",
                           "max_drop=0.2", f"out={root}/table"], capture_output=True, text=True,
                          cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {ln.split("|")[1].strip(): ln for ln in proc.stdout.splitlines() if ln.startswith("| ")}
    assert set(rows) >= {"entropy", "halt_head"} and rows["entropy"].split("|")[2].strip() == "1"
    evaluated = json.loads((root / "table" / "run_entropy" / "metrics.json").read_text())
    assert evaluated["calibrate/max_drop"] == 0.2
    assert f"{evaluated['test/avg_exit']:.4f}" in rows["entropy"]


def load_script():
    import importlib.util

    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("exit_rules_table", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("args, message", [
    (["."], "is not a training run dir"),
    (["RUN", "rules=entropy,nope"], "'nope' is unknown; allowed: halt_head"),
    (["RUN", "max_dro=0.1"], "max_dro='0.1': unknown option"),
])
def test_exit_rules_table_bad_options(checkpoint, args, message):
    root, _ = checkpoint
    with pytest.raises(ConfigError, match=message):
        load_script().parse([str(root / "run") if a == "RUN" else a for a in args])


def test_exit_rules_table_bad_input_is_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "no run dirs given" in proc.stderr and "Traceback" not in proc.stderr


def test_exit_rules_table_says_none_where_nothing_was_certified():
    script = load_script()
    run = {"test/acc": 0.9, "test/final_acc": 0.9, "test/avg_exit": 8.0, "test/csr": 0.0,
           "ood/acc": 0.5, "ood/final_acc": 0.5, "ood/avg_exit": 16.0}
    out = script.table({"kl": [{**run, "calibrate/threshold": None},
                               {**run, "calibrate/threshold": 0.001}]}, {"kl": []})
    row = next(ln for ln in out.splitlines() if ln.startswith("| kl |"))
    assert "none, 0.001" in row and "| 2 |" in row
