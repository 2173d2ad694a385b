"""The baseline every table compares against: always think for all T_max steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack
from rds_act.models.dyntrm import StepOut


class Fixed(ACTStrategy):
    """Task loss at the last step (or averaged over all steps with ``deep_supervision``)."""

    name = "fixed"

    def __init__(self, deep_supervision: bool = False):
        super().__init__()
        self.deep_supervision = deep_supervision

    not_per_step = None  # one step's task loss

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        task = stack.losses.mean() if self.deep_supervision else stack.losses[-1].mean()
        return task, {"task_loss": task.detach()}

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        return torch.zeros(step.pred.shape[0], dtype=torch.bool, device=step.pred.device), carry
