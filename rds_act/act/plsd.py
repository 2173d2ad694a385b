"""PLSD: unroll to T_max, find each sample's halting target (t* = argmin_t loss_t by default), fit
the halt head to the step 1[t >= target]."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rds_act.act.base import (
    ACTStrategy,
    StepStack,
    first_stable_correct,
    step_targets,
    tolerant_step,
)
from rds_act.errors import check_choice, check_range
from rds_act.models.dyntrm import StepOut


class PLSD(ACTStrategy):
    """Deep-supervised task loss + ``halt_weight`` * BCE(halt head, 1[t >= t_h]), t_h the halting
    target (the oracle step t* = argmin_t loss_t unless a remedy below moves it).

    Halts when sigmoid(halt logit) > ``threshold`` (0.5 for plain PLSD). Deep supervision keeps
    sharpening answers that are already right, so a plain argmin of the loss teaches late exits;
    two remedies move the halting target earlier:
    ``tolerance`` ε: the earliest step within ε of the best loss (``halt_target='loss_right'``:
    of those, only steps as right as the best one, so a wrong step near the decision boundary is
    never the target); ``halt_target='correct'``: the earliest step from which the prediction
    stays right (samples wrong at the last step: T).

    ``unsolved`` places the target of a sample that no step gets right: ``argmin`` (the loss's,
    over steps that are all about equally wrong: usually step 1) or ``last`` (think to the end).
    A head that sees an unsure step 1 cannot tell such a sample from one a later step will solve;
    with ``argmin`` both groups share the step-1 target, and once they and the samples step 1
    already solves are the majority the head halts every sample there (the halting collapse).
    """

    name = "plsd"
    HALT_TARGETS = ("loss", "loss_right", "correct")
    UNSOLVED = ("argmin", "last")

    def __init__(
        self, halt_weight: float = 1.0, threshold: float = 0.5, tolerance: float = 0.0,
        halt_target: str = "loss", unsolved: str = "argmin",
    ):
        super().__init__()
        check_range("act.halt_weight", halt_weight, 0.0)
        check_range("act.threshold", threshold, 0.0, 1.0)
        check_range("act.tolerance", tolerance, 0.0)
        check_choice("act.halt_target", halt_target, self.HALT_TARGETS)
        check_choice("act.unsolved", unsolved, self.UNSOLVED)
        self.unsolved = unsolved
        self.halt_weight, self.threshold, self.tolerance = halt_weight, threshold, tolerance
        self.halt_target = halt_target

    not_per_step = "its halting target 1[t >= t_h] needs every step's loss to place t_h"

    def halt_step(self, stack: StepStack, batch: dict[str, Tensor]) -> Tensor:
        """The step the halt head is taught to stop at (overridable, e.g. with a step cost)."""
        return self.target_step(stack, stack.losses)

    def target_step(self, stack: StepStack, costs: Tensor) -> Tensor:
        """The halting target from per-step ``costs`` (the loss, or the loss plus a step cost).

        With ``halt_target='correct'``, a sample that is not right at the last step is taught to
        think to the end: while the model knows nothing, the target stays fixed instead of
        following the noise of an argmin over equally bad steps.
        """
        if self.halt_target == "correct":
            return first_stable_correct(stack.correct, torch.full_like(costs[0], stack.steps).long())
        right = stack.correct if self.halt_target == "loss_right" else None
        target = tolerant_step(costs, self.tolerance, right)
        if self.unsolved == "last":
            target = torch.where(stack.correct.any(0), target, torch.full_like(target, stack.steps))
        return target

    def answer_loss(self, stack: StepStack, halt_at: Tensor) -> Tensor:
        """The readout's share of the loss (deep supervision: the mean over steps); the task's
        per-sample loss itself is ``stack.task_loss``."""
        return stack.losses.mean()

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        halt_at = self.halt_step(stack, batch)
        target = step_targets(halt_at, stack.steps)
        logits = stack.unrolled.halt_logits[..., 0]
        halt_loss = F.binary_cross_entropy_with_logits(logits, target)
        task = self.answer_loss(stack, halt_at)
        with torch.no_grad():
            halt_acc = ((logits > 0).float() == target).float().mean()
        logs = {"task_loss": task.detach(), "halt_loss": halt_loss.detach(),
                "halt_acc": halt_acc, "halt_target_step": halt_at.float().mean()}
        return task + self.halt_weight * halt_loss, logs

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        return torch.sigmoid(step.halt_logits[..., 0]) > self.threshold, carry
