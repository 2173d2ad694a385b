"""PonderNet (Banino et al. 2021): a halting distribution over steps, trained by expectation."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack, step_index
from rds_act.errors import ConfigError, check_range
from rds_act.models.dyntrm import StepOut

INFERENCE = ("cumulative", "sample")


def halting_distribution(halt_logits: Tensor) -> Tensor:
    """``p_t = λ_t ∏_{j<t}(1 − λ_j)`` over ``[T, B]`` logits, the remainder on the last step.

    ``λ_t = σ(halt_t)`` is the per-step halting probability (``halt_prob``). The remainder
    ``∏_{j<T}(1 − λ_j)`` replaces ``p_T`` so that p sums to 1 over the T steps that exist
    (λ_T itself is never used in training).
    """
    halt_prob = torch.sigmoid(halt_logits)
    survive = torch.cat([torch.ones_like(halt_prob[:1]),
                         torch.cumprod(1.0 - halt_prob, 0)[:-1]])  # ∏_{j<t}
    return torch.cat([(halt_prob * survive)[:-1], survive[-1:]])


def truncated_geometric(lambda_p: float, steps: int, device=None) -> Tensor:
    """Geometric(λ_p = ``lambda_p``) prior over steps 1..T, renormalised to sum to 1 there."""
    t = torch.arange(steps, device=device, dtype=torch.float32)
    prior = lambda_p * (1.0 - lambda_p) ** t
    return prior / prior.sum()


class Ponder(ACTStrategy):
    """``loss = mean_b Σ_t p_t ℓ_t + β · KL(p ‖ truncated Geometric(λ_p))``.

    ``λ_t = σ(halt_t)`` is the per-step halting probability (``halt_prob`` in the code);
    ``λ_p = lambda_p`` is the prior's own per-step halting probability. The KL pulls the halting
    distribution toward a prior with mean about 1/λ_p steps, which both regularises and keeps
    exploring late steps. Inference: ``cumulative`` halts once the halting mass so far,
    ``1 − ∏_{j<=t}(1 − λ_j)``, exceeds 0.5 (deterministic; the carry is the running product per
    sample); ``sample`` halts with probability λ_t (torch's global RNG), as in the paper.
    """

    name = "ponder"

    def __init__(self, beta: float = 0.01, lambda_p: float = 0.2, inference: str = "cumulative"):
        super().__init__()
        check_range("act.beta", beta, 0.0)
        if not (0.0 < lambda_p <= 1.0):
            raise ConfigError(f"act.lambda_p={lambda_p} is out of range; allowed: (0, 1]")
        if inference not in INFERENCE:
            raise ConfigError(f"act.inference={inference!r} is unknown; "
                              f"allowed: {', '.join(INFERENCE)}")
        self.beta, self.lambda_p, self.inference = beta, lambda_p, inference

    def loss(self, stack: StepStack, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        p = halting_distribution(stack.unrolled.halt_logits[..., 0].float())
        task = (p * stack.losses).sum(0).mean()
        prior = truncated_geometric(self.lambda_p, stack.steps, p.device)[:, None]
        tiny = torch.finfo(p.dtype).tiny
        # p log p with the log clamped: a saturated halting unit (σ = 1.0 in float32) makes later
        # p exactly 0, where xlogy's gradient, log p + 1, is -inf and turns every weight NaN
        kl = (p * (p.clamp_min(tiny).log() - prior.clamp_min(tiny).log())).sum(0).mean()
        t = step_index(stack.steps, p.device).to(p.dtype)[:, None]
        logs = {"task_loss": task.detach(), "ponder_kl": kl.detach(),
                "expected_steps": (p * t).sum(0).mean().detach()}
        return task + self.beta * kl, logs

    def halt(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        halt_prob = torch.sigmoid(step.halt_logits[..., 0].float())
        if self.inference == "sample":
            return torch.rand(halt_prob.shape, device=halt_prob.device) < halt_prob, carry
        survive = (torch.ones_like(halt_prob) if carry is None else carry) * (1.0 - halt_prob)
        return 1.0 - survive > 0.5, survive
