"""Graves (2016) Adaptive Computation Time: halting units summed up to 1 − ε, ponder cost."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack, step_index
from rds_act.errors import ConfigError, check_range
from rds_act.models.dyntrm import StepOut


def act_weights(halt_logits: Tensor, epsilon: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mixing weights ``w [T, B]``, halting step ``N [B]`` (1-based) and remainder ``R [B]``.

    ``h_t = σ(halt_t)``; N is the first t with ``Σ_{j<=t} h_j >= 1 − ε`` (forced at T);
    ``R = 1 − Σ_{t<N} h_t``; ``w_t = h_t`` for t < N, R at N, 0 after, so w sums to 1.
    """
    h = torch.sigmoid(halt_logits)
    steps = h.shape[0]
    reached = h.detach().cumsum(0) >= 1.0 - epsilon
    reached[-1] = True
    n = reached.float().argmax(0) + 1  # first step that reaches the budget
    t = step_index(steps, h.device)[:, None]
    before = (t < n[None]).to(h.dtype)
    remainder = 1.0 - (h * before).sum(0)
    weights = h * before + remainder[None] * (t == n[None]).to(h.dtype)
    return weights, n, remainder


class ACTGraves(ACTStrategy):
    """Task loss of the weighted mixture ``Σ_t w_t · pred_t`` plus ``τ · mean_b(N + R)``.

    The mixture is taken over the raw predictions (logits for classification, values for
    regression) and scored with ``stack.task_loss.loss``, the same path for both kinds. As in the
    paper, N is piecewise constant so only R carries gradient in the ponder cost.

    Halting at evaluation: stop at the first t where the cumulative ``h`` reaches ``1 − ε``
    (carry = the running sum per sample). Evaluation scores the exit step's own prediction, not
    the training-time mixture, so that every strategy is measured the same way.
    """

    name = "act_graves"

    def __init__(self, epsilon: float = 0.01, tau: float = 0.01):
        super().__init__()
        if not (0.0 < epsilon < 1.0):
            raise ConfigError(f"act.epsilon={epsilon} is out of range; allowed: (0, 1)")
        check_range("act.tau", tau, 0.0)
        self.epsilon, self.tau = epsilon, tau

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if stack.task_loss is None:
            raise ConfigError("act_graves re-scores the mixed prediction: StepStack.task_loss "
                              "must be set")
        weights, n, remainder = act_weights(stack.unrolled.halt_logits[..., 0].float(),
                                            self.epsilon)
        preds = stack.unrolled.preds
        shaped = weights.view(*weights.shape, *[1] * (preds.dim() - 2))
        mixed = (shaped * preds).sum(0)
        task = stack.task_loss.loss(mixed, batch).mean()
        ponder = (n.to(remainder.dtype) + remainder).mean()
        t = step_index(stack.steps, weights.device).to(weights.dtype)[:, None]
        logs = {"task_loss": task.detach(), "ponder_cost": ponder.detach(),
                "expected_steps": (weights * t).sum(0).mean().detach(),
                "halt_step": n.float().mean()}
        return task + self.tau * ponder, logs

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        h = torch.sigmoid(step.halt_logits[..., 0].float())
        total = h if carry is None else carry + h
        return total >= 1.0 - self.epsilon, total
