"""Per-cell outputs: one class per cell, padding ignored, acc = the whole answer exact."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, HaltAtOwnStep, check_adaptive_matches_masked, run_cli, run_script
from omegaconf import OmegaConf

from rds_act.act import PLSD
from rds_act.losses import CellCrossEntropyLoss
from rds_act.models import DynTRM
from rds_act.models.layers import CellReadout, GridTokenEncoder
from rds_act.module import ACTLitModule

IGNORE = -100


def logits_for(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Confident logits predicting ``labels`` [B, L] (ignored cells predict class 0)."""
    return torch.nn.functional.one_hot(labels.clamp(min=0), classes).float() * 10


def test_loss_and_accuracy_ignore_padding_and_score_the_whole_answer():
    loss = CellCrossEntropyLoss(ignore_index=IGNORE)
    y = torch.tensor([[0, 1, IGNORE, IGNORE], [1, 1, 0, 1]])
    pred = logits_for(torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]]), 2)  # pad cells "wrong"
    batch = {"y": y}
    assert loss.correct(pred, batch).tolist() == [True, False]  # padding never counts
    assert loss.cell_accuracy(pred, batch).tolist() == [1.0, 0.75]
    per_sample = loss.loss(pred, batch)
    assert per_sample[0] < 1e-3 and per_sample[1] > 1.0  # a mean over answer cells only
    # a padded cell's logits do not move the loss
    pred2 = pred.clone()
    pred2[0, 2:] = torch.tensor([-50.0, 50.0])
    assert torch.allclose(loss.loss(pred2, batch), per_sample)
    # leading step axis: [T, B, L, C] -> [T, B]
    stacked = torch.stack([pred, pred2])
    assert loss.loss(stacked, batch).shape == (2, 2) and loss.correct(stacked, batch).shape == (2, 2)


def test_grid_encoder_knows_rows_and_columns():
    enc = GridTokenEncoder(n_tokens=3, height=2, width=3, d_model=8)
    x = torch.zeros(1, 6, dtype=torch.long)
    h = enc({"x": x})[0]  # same token everywhere: only positions differ
    row, col = enc.row.detach()[:, 0], enc.col.detach()[0]
    torch.testing.assert_close(h[4] - h[1], row[1] - row[0])  # same column, next row
    torch.testing.assert_close(h[2] - h[0], col[2] - col[0])  # same row, two columns on
    with pytest.raises(Exception, match="2x3 = 6"):
        enc({"x": torch.zeros(1, 5, dtype=torch.long)})
    with pytest.raises(Exception, match="n_tokens"):
        enc({"x": torch.full((1, 6), 3)})


def grid_model(steps: int = 4) -> DynTRM:
    torch.manual_seed(0)
    model = DynTRM(GridTokenEncoder(5, 3, 3, 16), CellReadout(16, 4), d_model=16, n_heads=2,
                   T_max=steps, halt_confidence=True, state_norm=False)
    with torch.no_grad():  # large weights, so predictions change from step to step
        for p in model.block.parameters():
            p.mul_(4.0)
    return model.eval()


def test_adaptive_path_and_exits_work_per_sample_on_cell_outputs():
    model = grid_model()
    b = {"x": torch.randint(0, 5, (12, 9)), "y": torch.randint(0, 4, (12, 9)), "index": torch.arange(12)}
    pred, ref, unrolled = check_adaptive_matches_masked(model, b, 4)
    assert pred.shape == (12, 9, 4)
    # the module scores every sample at its own exit: relabel so each is exact only there
    module = ACTLitModule(model, PLSD(), CellCrossEntropyLoss(), torch.optim.AdamW,
                          exit_rule=HaltAtOwnStep(4))
    b["y"] = unrolled.preds.argmax(-1)[ref - 1, torch.arange(12)]
    with torch.no_grad():
        _, record = module.evaluate(b, "test")
    assert record.correct_exit.all() and torch.equal(record.exit_step, ref)
    assert record.cell_acc_exit.eq(1).all()
    assert not record.correct_final.all()


def test_cell_task_through_the_entry_point_writes_cell_acc(tmp_path, capsys):
    run = tmp_path / "run"
    proc = run_cli("rds_act.train", [
        "task=sudoku", "task.datamodule.size=4", "task.datamodule.n_puzzles=32",
        f"task.datamodule.cache_dir={tmp_path / 'cache'}", *TINY, "logger=csv", "trainer.max_epochs=1",
        f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("test", "ood"):
        assert 0 <= metrics[f"{split}/cell_acc"] <= 1
        assert metrics[f"{split}/acc"] <= metrics[f"{split}/cell_acc"]
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    test = [r for r in rows if r["split"] == "test"]
    mean = sum(float(r["cell_acc"]) for r in test) / len(test)
    assert mean == pytest.approx(metrics["test/cell_acc"], abs=1e-6)  # recomputable per sample
    assert all(r["correct"] == "0" or float(r["cell_acc"]) == 1.0 for r in test)
    # scripts/exit_table.py recomputes the split's accuracies from predictions.csv alone
    script = Path(__file__).resolve().parent.parent / "scripts" / "exit_table.py"
    code, out, err = run_script(script, [str(run), "buckets=3"], capsys)
    assert code == 0, err
    lines = [ln.split("|")[1:-1] for ln in out.splitlines() if ln.startswith("| test |")]
    n = sum(int(c[2]) for c in lines)
    assert n == len(test) and len(lines) >= 2
    for col, key in ((3, "test/acc"), (4, "test/final_acc")):
        assert sum(int(c[2]) * float(c[col]) for c in lines) / n == pytest.approx(metrics[key], abs=2e-3)
    # a reader that is gone before the table is written (`| head`, here `| true`) ends the script
    # with the shell's code for a closed pipe, not a traceback
    line = f"set -o pipefail; {sys.executable} {script} {run} buckets=3 | true"
    piped = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 141 and "Traceback" not in piped.stderr, piped.stderr
    # scripts/compute_to_accuracy.py reads the compute at the first validation reaching a figure
    script = script.with_name("compute_to_accuracy.py")
    steps = int(OmegaConf.load(run / ".hydra" / "config.yaml").task.T_max)
    for threshold, want in (("0", f"| {run} | 64 | {64 * steps:.3g} |"), ("2", f"| {run} | not reached |")):
        code, out, err = run_script(script, [str(run), f"threshold={threshold}"], capsys)
        assert code == 0, err
        assert want in out
    for bad, named in (([str(tmp_path / "nope")], "nope"), ([str(run), "threshold=abc"], "threshold='abc'"),
                       ([str(run), "bins=3"], "bins='3'")):
        code, out, err = run_script(script, bad, capsys)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and named in errors[0], err
        assert "Traceback" not in err
