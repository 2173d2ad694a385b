"""Per-sample task losses and correctness, shared by every strategy (the task sets which one)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rds_act.errors import check_range


class TaskLoss:
    """``loss(pred, batch) -> [B]`` and ``correct(pred, batch) -> bool[B]``; works on any leading dims."""

    kind = "classification"
    per_cell = False  # one label per cell: metrics add cell_acc

    def loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def correct(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def sq_error(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor | None:
        """Per-sample mean squared error (regression tasks only)."""
        return None

    def changed_sq_error(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor | None:
        """Per-sample sum of squared errors over the coordinates in ``batch['mask']`` (those the
        task's rule changes; regression tasks with a mask only)."""
        return None

    def cell_accuracy(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor | None:
        """Per-sample share of answer cells right (tasks with one label per cell only)."""
        return None


class CrossEntropyLoss(TaskLoss):
    """Classification: cross-entropy, correct = argmax matches the label."""

    kind = "classification"

    def loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        y = batch["y"].expand(pred.shape[:-1])
        return F.cross_entropy(pred.flatten(0, -2), y.flatten(), reduction="none").view(y.shape)

    def correct(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return pred.argmax(-1) == batch["y"]


class WeightedMSELoss(TaskLoss):
    """Regression: MSE with coordinates in ``batch['mask']`` (the ones the rule changes) weighted
    ``diff_weight`` times; correct = every coordinate within ``tol``."""

    kind = "regression"

    def __init__(self, diff_weight: float = 1.0, tol: float = 0.1):
        check_range("task.loss.diff_weight", diff_weight, 0.0)
        check_range("task.loss.tol", tol, 0.0)
        self.diff_weight, self.tol = diff_weight, tol

    def loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        w = 1.0 + (self.diff_weight - 1.0) * batch["mask"]
        return ((pred - batch["y"]) ** 2 * w).sum(-1) / w.sum(-1)

    def correct(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return ((pred - batch["y"]).abs() < self.tol).all(-1)

    def sq_error(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return ((pred - batch["y"]) ** 2).mean(-1)

    def changed_sq_error(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor | None:
        if "mask" not in batch:
            return None
        return ((pred - batch["y"]) ** 2 * batch["mask"]).sum(-1)


class CellCrossEntropyLoss(TaskLoss):
    """One class label per cell (Sudoku digits, maze path cells, ARC colours; TRM's form).

    ``pred`` is [..., B, L, C] and ``batch['y']`` [B, L]; cells labelled ``ignore_index``
    (padding) count in neither loss nor accuracy. The loss is the mean cross-entropy over a
    sample's answer cells; ``correct`` is the papers' metric, every answer cell right (the whole
    grid exact); ``cell_accuracy`` is the share of answer cells right.
    """

    kind = "classification"
    per_cell = True

    def __init__(self, ignore_index: int = -100):
        self.ignore_index = int(ignore_index)

    def _valid(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["y"] != self.ignore_index

    def loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        y = batch["y"].expand(pred.shape[:-1])
        ce = F.cross_entropy(pred.flatten(0, -2), y.flatten(), reduction="none",
                             ignore_index=self.ignore_index).view(y.shape)
        valid = self._valid(batch).to(ce.dtype)
        return (ce * valid).sum(-1) / valid.sum(-1).clamp(min=1)

    def correct(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return ((pred.argmax(-1) == batch["y"]) | ~self._valid(batch)).all(-1)

    def cell_accuracy(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        valid = self._valid(batch)
        right = ((pred.argmax(-1) == batch["y"]) & valid).sum(-1)
        return right.double() / valid.sum(-1).clamp(min=1).double()
