"""The strategy interface: a training loss over the unrolled step stack, and a halting rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rds_act.models.dyntrm import StepOut, Unrolled


@dataclass
class StepStack:
    """What a strategy's loss sees: the model's per-step outputs plus per-step task scores.

    ``losses[t-1, b]`` is sample b's task loss at step t (carries grad where the step did);
    ``correct[t-1, b]`` says whether that step's prediction is right; ``task_loss`` is the
    ``rds_act.losses.TaskLoss`` that produced them.
    """

    unrolled: Unrolled
    losses: Tensor
    correct: Tensor
    task_loss: Any = None  # the TaskLoss that scored the steps, for strategies that re-score mixes

    @property
    def steps(self) -> int:
        return self.losses.shape[0]


def oracle_step(losses: Tensor) -> Tensor:
    """1-based ``t* = argmin_t loss_t`` per sample (the oracle step of the metrics); ties go to the
    earliest step."""
    return losses.detach().argmin(0) + 1


def tolerant_step(losses: Tensor, tolerance: float = 0.0, correct: Tensor | None = None) -> Tensor:
    """1-based halting target: the earliest step whose loss is within ``tolerance`` ε of the
    sample's minimum (ε = 0: ``oracle_step``), so that a step which only sharpens an answer that
    is already right does not count as progress. With ``correct`` [T, B] as well, only steps as
    right as the minimum's count: near the decision boundary (a two-class loss of ~0.69 nats) ε
    spans a wrong answer and a right one, and without it a sample wrong at step 1 but right later
    is taught to stop at step 1.
    """
    if tolerance <= 0:
        return oracle_step(losses)
    losses = losses.detach()
    close = losses <= losses.min(0).values + tolerance
    if correct is not None:
        best = correct.gather(0, losses.argmin(0)[None])  # [1, B]: is the best step right?
        close &= correct == best
    return close.float().argmax(0) + 1  # argmax returns the first maximal entry


def first_stable_correct(correct: Tensor, fallback: Tensor) -> Tensor:
    """1-based earliest step from which every later prediction is right; ``fallback`` (1-based)
    for samples whose last step is wrong. A correctness-aware halting target: the first step
    at which the answer is ready, not the step where the loss happens to be lowest."""
    stable = correct.flip(0).int().cumprod(0).flip(0).bool()  # right at t and at every t' > t
    first = stable.int().argmax(0) + 1
    return torch.where(stable[-1], first, fallback)


def step_index(steps: int, device=None) -> Tensor:
    """The 1-based step numbers ``1..steps`` as a long tensor [T]."""
    return torch.arange(1, steps + 1, device=device)


def exploration_min_steps(n: int, steps: int, explore_prob: float, device=None) -> Tensor:
    """TRM's exploration: per sample, with probability ``explore_prob`` a minimum step count
    ``m ~ U{2..steps}`` before which it may not halt, else ``m = 1`` (long tensor [n])."""
    min_steps = torch.ones(n, dtype=torch.long, device=device)
    if explore_prob > 0 and steps > 1:
        explore = torch.rand(n, device=device) < explore_prob
        random_min = torch.randint(2, steps + 1, (n,), device=device)
        min_steps = torch.where(explore, random_min, min_steps)
    return min_steps


def step_targets(t_star: Tensor, steps: int) -> Tensor:
    """The halting step function ``1[t >= t*]`` as a float tensor [T, B]."""
    t = step_index(steps, t_star.device)[:, None]
    return (t >= t_star[None, :]).float()


def first_exit(unrolled: Unrolled, rule: Any, steps: int | None = None) -> Tensor:
    """1-based exit step per sample: the first t where ``rule`` halts, else the last step.

    This is the masked reference: every sample is run for every step and the rule is asked at
    each one; ``DynTRM.adaptive_forward`` must agree with it.
    """
    steps = unrolled.steps if steps is None else steps
    n = unrolled.preds.shape[1]
    exit_step = torch.full((n,), steps, dtype=torch.long, device=unrolled.preds.device)
    done = torch.zeros(n, dtype=torch.bool, device=unrolled.preds.device)
    carry = None
    for t in range(1, steps + 1):
        halt, carry = rule(unrolled.step(t), t, carry)
        new = halt & ~done
        exit_step[new] = t
        done |= halt
    return exit_step


class ACTStrategy:
    """Base class: subclasses implement ``loss`` and ``halt``.

    The LightningModule calls ``set_epoch`` at the start of every training epoch, so that
    strategies can ramp penalties (``self.epoch``).
    """

    name = "base"

    @property
    def trains_last_step(self) -> bool:
        """Whether the loss trains the last step's answer for every sample (what a curriculum
        with ``metric=final`` scores); False for a loss at each sample's t* alone."""
        return True

    @property
    def not_per_step(self) -> str | None:
        """Why the loss cannot be trained one supervision step at a time
        (``training=deep_supervision``), or None where it can."""
        return "its loss needs every step's outputs at once"

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The training epoch now starting (0-based)."""
        self.epoch = int(epoch)

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        """Per-sample decision at 1-based step ``t``; returns (BoolTensor[B], carry)."""
        raise NotImplementedError

    def __call__(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        return self.halt(step, t, carry)
