"""TRM/HRM-style Q-learning halting: the two halt logits are Q(halt) and Q(continue).

Why a rollout simulation: TRM trains one supervision step at a time and only the steps a sample
actually ran are supervised. Here every sample is unrolled to ``T`` for speed, so the rollout is
replayed on the (detached) logits of the stack and only the steps up to each sample's training
exit contribute to the losses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack, exploration_min_steps, step_index
from rds_act.errors import ConfigError, check_choice, check_range
from rds_act.models.dyntrm import StepOut

TARGETS = ("bce", "adl")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


class QLearning(ACTStrategy):
    """Q head over (halt, continue) with bootstrapped continue targets and exploration.

    ``target='bce'`` (TRM): Q values are logits. ``Q_halt_t`` is fitted by BCE to "the prediction
    at step t is correct"; ``Q_cont_t`` (t < T) by BCE to ``σ(max(Q_halt_{t+1}, Q_cont_{t+1}))``,
    or ``σ(Q_halt_T)`` when t+1 = T (continuing past T is impossible); no continue target at T.
    Halts when ``Q_halt > Q_cont`` (``Q_halt > 0`` with ``use_continue=False``, which also drops
    the continue loss).

    ``target='adl'`` (the seed's differential-reward variant): Q values are raw scores fitted by
    MSE. The reward for reaching step t is the loss improvement ``r_t = ℓ_{t-1} − ℓ_t``
    (``ℓ_0 := ℓ_1``, so ``r_1 = 0``). Halting ends the episode with no further reward, so the
    ``Q_halt_t`` target is 0; ``Q_cont_t`` target is ``r_{t+1} + γ·max(Q_halt_{t+1},
    Q_cont_{t+1})``, or ``r_T + γ·Q_halt_T`` when t+1 = T. Halts when
    ``Q_halt − Q_cont > margin`` (margin = 0: greedy, halt once continuing is expected to hurt;
    a larger margin asks for a clearer advantage of halting, so it never exits earlier).

    All targets are computed under ``no_grad``. Exploration: with probability ``explore_prob`` a
    sample gets a minimum step count ``m ~ U{2..T}`` (else ``m = 1``); its training exit is the
    first ``t >= m`` where the halting rule fires on the detached logits, forced at T. The task
    loss and both Q losses are means over the (sample, step) pairs that ran, as if each ran step
    were one TRM supervision step. Total: ``task + q_weight·(q_halt_loss + q_continue_loss)``.
    """

    name = "qlearning"

    def __init__(
        self,
        use_continue: bool = True,
        explore_prob: float = 0.1,
        target: str = "bce",
        gamma: float = 0.9,
        margin: float = 0.0,
        q_weight: float = 0.5,
    ):
        super().__init__()
        check_choice("act.target", target, TARGETS)
        check_range("act.explore_prob", explore_prob, 0.0, 1.0)
        check_range("act.gamma", gamma, 0.0, 1.0)
        finite = isinstance(margin, int | float) and not isinstance(margin, bool) and math.isfinite(margin)
        if not finite:
            raise ConfigError(f"act.margin={margin} is out of range; allowed: a finite number")
        check_range("act.q_weight", q_weight, 0.0)
        if target == "adl" and not use_continue:
            raise ConfigError("act.use_continue=false is only allowed with act.target=bce "
                              "(adl halts on Q_halt - Q_continue)")
        self.use_continue, self.explore_prob, self.target = bool(use_continue), explore_prob, target
        self.gamma, self.margin, self.q_weight = gamma, margin, q_weight

    @property
    def not_per_step(self) -> str | None:
        if self.use_continue:  # TRM dropped the continue loss; one step has no next step to fit
            return ("act.use_continue=true fits Q_continue to the next step's Q values, which one "
                    "supervision step does not have")
        return None

    # -- rules and targets ------------------------------------------------------------------
    def halts(self, logits: Tensor) -> Tensor:
        """The halting rule on (halt, continue) logits ``[..., 2]`` -> bool ``[...]``."""
        q_halt, q_cont = logits[..., 0], logits[..., 1]
        if self.target == "adl":
            return q_halt - q_cont > self.margin
        return q_halt > q_cont if self.use_continue else q_halt > 0

    @torch.no_grad()
    def halt_targets(self, stack: StepStack) -> Tensor:
        """``[T, B]``: correctness at t (bce) or 0 (adl: halting earns no further reward)."""
        if self.target == "adl":
            return torch.zeros_like(stack.losses, dtype=torch.float32)
        return stack.correct.float()

    @torch.no_grad()
    def continue_targets(self, stack: StepStack) -> Tensor:
        """``[T-1, B]``: the bootstrapped target for continuing at steps 1..T-1 (no grad)."""
        q = stack.unrolled.halt_logits.detach().float()[1:]  # steps 2..T
        best = q.max(-1).values
        best[-1] = q[-1, :, 0]  # the step after is the last one: only halting is possible there
        if self.target == "bce":
            return torch.sigmoid(best)
        ell = stack.losses.detach().float()
        reward = torch.cat([ell[:1], ell[:-1]]) - ell  # r_t = ℓ_{t-1} − ℓ_t, r_1 = 0
        return reward[1:] + self.gamma * best

    @torch.no_grad()
    def training_exit(self, stack: StepStack) -> Tensor:
        """1-based exit of the simulated training rollout per sample (with exploration)."""
        steps, n = stack.losses.shape
        device = stack.losses.device
        min_steps = exploration_min_steps(n, steps, self.explore_prob, device)
        t = step_index(steps, device)[:, None]
        fire = (self.halts(stack.unrolled.halt_logits.detach()) & (t >= min_steps)) | (t == steps)
        return fire.float().argmax(0) + 1  # argmax returns the first maximum

    # -- interface --------------------------------------------------------------------------
    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        exit_step = self.training_exit(stack)
        t = step_index(stack.steps, stack.losses.device)[:, None]
        ran = (t <= exit_step[None]).float()
        task = masked_mean(stack.losses, ran)
        logits = stack.unrolled.halt_logits.float()
        q_halt, q_cont = logits[..., 0], logits[..., 1]
        fit = F.mse_loss if self.target == "adl" else F.binary_cross_entropy_with_logits
        q_halt_loss = masked_mean(fit(q_halt, self.halt_targets(stack), reduction="none"), ran)
        q_cont_loss = torch.zeros((), device=logits.device)
        if self.use_continue and stack.steps > 1:
            cont = fit(q_cont[:-1], self.continue_targets(stack), reduction="none")
            q_cont_loss = masked_mean(cont, ran[:-1])
        with torch.no_grad():
            q_halt_acc = masked_mean(((q_halt > 0) == stack.correct).float(), ran)
        logs = {"task_loss": task.detach(), "q_halt_loss": q_halt_loss.detach(),
                "q_continue_loss": q_cont_loss.detach(), "q_halt_acc": q_halt_acc,
                "rollout_steps": exit_step.float().mean()}
        return task + self.q_weight * (q_halt_loss + q_cont_loss), logs

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        return self.halts(step.halt_logits), carry
