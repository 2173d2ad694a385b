"""t*, PLSD targets and the exit metrics on hand-built numbers."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_stack

from rds_act.act import PLSD, Fixed, first_exit, oracle_step, step_targets
from rds_act.metrics import ExitRecord, exit_metrics

# three samples (columns), four steps (rows)
LOSSES = [[2.0, 1.0, 0.9],
          [1.0, 1.0, 0.3],
          [0.2, 1.0, 0.3],
          [0.4, 2.0, 0.1]]


def test_oracle_step_is_one_based_argmin_with_earliest_tie():
    assert oracle_step(torch.tensor(LOSSES)).tolist() == [3, 1, 4]


def test_plsd_targets_are_step_function():
    targets = step_targets(torch.tensor([3, 1, 4]), 4)
    assert targets.T.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]


def test_plsd_loss_value():
    stack = make_stack(LOSSES, halt=[[0.0] * 3] * 4)
    loss, logs = PLSD(halt_weight=0.5).loss(stack, {})
    task = torch.tensor(LOSSES).mean()
    expected = task + 0.5 * math.log(2.0)  # BCE of logit 0 is log 2 for any target
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["halt_target_step"].item() == pytest.approx(8 / 3)


def test_first_exit_uses_first_halting_step_and_forces_last():
    # halt logits > 0 -> sigmoid > 0.5 -> halt
    halt = [[-1, 5, -1], [3, -1, -1], [-1, 5, -1], [-1, -1, -1]]
    stack = make_stack(LOSSES, halt=halt)
    assert first_exit(stack.unrolled, PLSD()).tolist() == [2, 1, 4]
    assert first_exit(stack.unrolled, Fixed()).tolist() == [4, 4, 4]


def test_record_scores_each_sample_at_its_own_exit():
    correct = [[True, False, False],
               [False, True, False],
               [False, False, True],
               [False, False, False]]
    stack = make_stack(LOSSES, correct=correct)
    exits = torch.tensor([1, 2, 3])  # every sample is right exactly at its own exit
    rec = ExitRecord.from_stack(stack, exits, steps_required=torch.tensor([1, 3, 3]))
    assert rec.correct_exit.tolist() == [True, True, True]
    assert rec.correct_final.tolist() == [False, False, False]  # post-loop state: all wrong
    assert rec.loss_exit.tolist() == pytest.approx([2.0, 1.0, 0.3])


def test_esa_csr_ige_over_under_on_hand_built_exits():
    stack = make_stack(LOSSES)
    exits = torch.tensor([3, 2, 4])          # t* = [3, 1, 4]
    required = torch.tensor([2, 2, 0])        # 0 = unknown, excluded from over/under
    metrics = exit_metrics("test")
    metrics.update(ExitRecord.from_stack(stack, exits, steps_required=required))
    out = {k: v.item() for k, v in metrics.compute().items()}
    assert out["test/esa"] == pytest.approx(2 / 3)
    assert out["test/avg_exit"] == pytest.approx(3.0)
    assert out["test/csr"] == pytest.approx(1 - 3 / 4)
    assert out["test/oracle_step"] == pytest.approx(8 / 3)
    assert out["test/oracle_csr"] == pytest.approx(1 - (8 / 3) / 4)
    # IGE = (E[l_1] - E[l_t*]) / E[t*] = ((2+1+.9)/3 - (.2+1+.1)/3) / (8/3)
    assert out["test/ige"] == pytest.approx((3.9 - 1.3) / 3 / (8 / 3))
    assert out["test/over_rate"] == pytest.approx(0.5)   # sample 0: exit 3 > 2
    assert out["test/under_rate"] == pytest.approx(0.0)
    assert out["test/avg_required"] == pytest.approx(2.0)


def test_metrics_accumulate_across_batches():
    metrics = exit_metrics("val")
    stack = make_stack(LOSSES)
    metrics.update(ExitRecord.from_stack(stack, torch.tensor([1, 1, 1])))
    metrics.update(ExitRecord.from_stack(stack, torch.tensor([4, 4, 4])))
    out = metrics.compute()
    assert out["val/avg_exit"].item() == pytest.approx(2.5)
    assert math.isnan(out["val/over_rate"].item())  # no steps_required given: undefined, not 0


def test_changed_relative_mse_is_the_error_on_changed_coordinates_over_their_variance():
    """Two batches, one split: errors only on the masked coordinates count, and the variance is
    that of the masked targets over the whole split (not per batch, not of every coordinate)."""
    from rds_act.losses import WeightedMSELoss
    from rds_act.metrics import ChangedRelativeMSE, ExitRecord

    loss = WeightedMSELoss()
    metric = ChangedRelativeMSE()
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    batches = [torch.tensor([[1.0, 3.0, 50.0], [1.0, 3.0, -50.0]]),
               torch.tensor([[5.0, 7.0, 9.0], [5.0, 7.0, 0.0]])]
    for y in batches:
        batch = {"y": y, "mask": mask}
        pred = torch.stack([y + 9.0, y + torch.tensor([0.5, -0.5, 4.0])])  # [T=2, B, 3]
        sq = loss.changed_sq_error(pred, batch)
        assert sq.shape == (2, 2)
        stack = make_stack([[1.0, 1.0], [0.0, 0.0]])
        metric.update(ExitRecord.from_stack(stack, torch.tensor([2, 2]), changed_sq=sq, batch=batch))
    # changed targets 1,3,1,3,5,7,5,7: variance 5; error 0.5 on each: MSE 0.25
    assert float(metric.compute()) == pytest.approx(0.25 / 5.0)


def test_every_split_metric_is_defined_in_docs_and_the_set_pickles():
    """The per-sample means are one table: each name it logs is defined in docs/metrics.md, and
    the whole set pickles (a metric holding its function, not its name, would not: ddp_spawn)."""
    import pickle
    from pathlib import Path

    metrics = exit_metrics("test", regression=True, per_cell=True)
    doc = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    for key in metrics.keys():
        assert f"`{key.split('/', 1)[1]}`" in doc, key
    copy = pickle.loads(pickle.dumps(metrics))
    stack = make_stack(LOSSES)
    copy.update(ExitRecord.from_stack(stack, torch.tensor([1, 2, 3])))
    assert copy.compute()["test/avg_exit"].item() == pytest.approx(2.0)


def test_prediction_rows_carry_every_schema_column_by_name():
    from rds_act.metrics import prediction_rows
    from rds_act.results import PREDICTION_COLUMNS

    stack = make_stack(LOSSES)
    record = ExitRecord.from_stack(stack, torch.tensor([1, 2, 3]), steps_required=torch.tensor([2, 0, 1]))
    rows = prediction_rows(record, "ood", torch.tensor([7, 8, 9]))
    assert [tuple(row) for row in rows] == [PREDICTION_COLUMNS] * 3
    assert [row["exit_step"] for row in rows] == [1, 2, 3]
    assert [row["steps_required"] for row in rows] == [2, 0, 1]
    assert [row["index"] for row in rows] == [7, 8, 9] and rows[0]["split"] == "ood"
    assert rows[0]["steps"] == stack.steps and rows[0]["error"] == ""
