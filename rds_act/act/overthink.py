"""Overthink: Better-PLSD that also pays for steps beyond the useful ones, ramped over epochs."""

from __future__ import annotations

import torch
from torch import Tensor

from rds_act.act.base import StepStack, step_index
from rds_act.act.better_plsd import BetterPLSD
from rds_act.errors import ConfigError, check_choice, check_range

MODES = ("step_cost", "privileged")


class Overthink(BetterPLSD):
    """Better-PLSD whose halting target (``halt_step``) is shifted earlier by a late-exit cost,
    weight ``w = clip((epoch - start) / warmup, 0, 1)`` (``warmup=0``: w = 1 from epoch ``start``
    on).

    ``start`` holds the cost off for the first epochs: under a hop curriculum, a step cost from
    the start trains each new hop's answer at the early steps where it cannot be ready yet, and
    the curriculum slows (docs/results/rpc.md, the step-cost runs).

    ``mode='step_cost'`` (no privileged information): ``t_h = argmin_t ℓ_t + β·w·t``, so an extra
    step must buy at least β of loss. ``mode='privileged'`` (reproduces the seed; needs
    ``batch['steps_required']``): ``t_h = argmin_t ℓ_t + β·w·max(0, t − steps_required)``.

    Halting side: ``overthink_penalty = β·w·mean_b Σ_{t=t_h}^{T-1} (1 − σ(halt_t))``, the
    number of steps at or after t_h on which the halt head still votes to continue (each costs
    one more step; step T is excluded because the run stops there anyway). It is added to the
    loss so the head fires at t_h rather than merely some time after it.
    """

    name = "overthink"

    def __init__(
        self,
        mode: str = "step_cost",
        beta: float = 0.02,
        warmup: float = 2,
        start: int = 0,
        threshold: float = 0.7,
        halt_weight: float = 1.0,
        ds_weight: float = 0.0,
        tolerance: float = 0.0,
        halt_target: str = "loss",
        unsolved: str = "argmin",
    ):
        super().__init__(threshold=threshold, halt_weight=halt_weight, ds_weight=ds_weight,
                         tolerance=tolerance, halt_target=halt_target, unsolved=unsolved)
        check_choice("act.mode", mode, MODES)
        check_range("act.beta", beta, 0.0)
        check_range("act.warmup", warmup, 0.0)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ConfigError(f"act.start={start!r} must be a whole epoch >= 0")
        self.mode, self.beta, self.warmup, self.start = mode, beta, warmup, int(start)

    def ramp(self) -> float:
        """The penalty weight w at the current epoch."""
        if self.epoch < self.start:
            return 0.0
        return 1.0 if self.warmup == 0 else min(1.0, (self.epoch - self.start) / self.warmup)

    def step_penalty(self, steps: int, batch: dict[str, Tensor], device=None) -> Tensor:
        """Unweighted late-exit cost per step, ``[T, B]`` (privileged) or ``[T, 1]``."""
        t = step_index(steps, device).float()[:, None]
        if self.mode == "step_cost":
            return t
        required = batch.get("steps_required")
        if required is None:
            raise ConfigError("act.mode=privileged needs batch['steps_required'] and this task "
                              "has none; use act.mode=step_cost")
        return (t - required.to(device=t.device, dtype=t.dtype)[None]).clamp_min(0.0)

    def halt_step(self, stack: StepStack, batch: dict[str, Tensor]) -> Tensor:
        device = stack.losses.device
        cost = self.beta * self.ramp() * self.step_penalty(stack.steps, batch, device)
        return self.target_step(stack, stack.losses.detach().float() + cost)

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, logs = super().loss(stack, batch)
        halt_at = self.halt_step(stack, batch)
        t = step_index(stack.steps, halt_at.device)[:, None]
        late = ((t >= halt_at[None]) & (t < stack.steps)).float()
        keep_going = 1.0 - torch.sigmoid(stack.unrolled.halt_logits[..., 0].float())
        w = self.ramp()
        penalty = self.beta * w * (late * keep_going).sum(0).mean()
        logs.update(overthink_penalty=penalty.detach(),
                    overthink_weight=torch.tensor(w, device=halt_at.device))
        return loss + penalty, logs
