"""PLSD: unroll to T_max, find the oracle step t*, fit the halt head to the step 1[t >= t*]."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack, oracle_step, step_targets
from rds_act.errors import check_range
from rds_act.models.dyntrm import StepOut


class PLSD(ACTStrategy):
    """Deep-supervised task loss + ``halt_weight`` * BCE(halt head, 1[t >= t*]).

    Halts when sigmoid(halt logit) > ``threshold`` (0.5 for plain PLSD).
    """

    name = "plsd"

    def __init__(self, halt_weight: float = 1.0, threshold: float = 0.5):
        super().__init__()
        check_range("act.halt_weight", halt_weight, 0.0)
        check_range("act.threshold", threshold, 0.0, 1.0)
        self.halt_weight, self.threshold = halt_weight, threshold

    def oracle(self, stack: StepStack, batch: dict[str, Tensor]) -> Tensor:
        """The step the halt head is taught to stop at (overridable, e.g. with a step cost)."""
        return oracle_step(stack.losses)

    def task_loss(self, stack: StepStack, t_star: Tensor) -> Tensor:
        return stack.losses.mean()

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        t_star = self.oracle(stack, batch)
        target = step_targets(t_star, stack.steps)
        logits = stack.unrolled.halt_logits[..., 0]
        halt_loss = F.binary_cross_entropy_with_logits(logits, target)
        task = self.task_loss(stack, t_star)
        with torch.no_grad():
            halt_acc = ((logits > 0).float() == target).float().mean()
        logs = {"task_loss": task.detach(), "halt_loss": halt_loss.detach(),
                "halt_acc": halt_acc, "oracle_step": t_star.float().mean()}
        return task + self.halt_weight * halt_loss, logs

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        return torch.sigmoid(step.halt_logits[..., 0]) > self.threshold, carry
