"""Calibrated exits: pick an exit rule's threshold on the validation split so that accuracy at
exit stays within ``max_drop`` of the last step's, with confidence ``1 - delta``.

Risk control in the spirit of Learn-then-Test (Angelopoulos et al. 2021): the risk of a threshold
is the share of samples its exit loses, ``harm = P(right at the last step, wrong at the exit)``,
which bounds the accuracy drop from above (an exit can also be right where the last step is
wrong; that only lowers the drop). The candidate thresholds are tested in a fixed sequence from
the most conservative (latest exits) to the most aggressive: each null "harm >= max_drop" is
rejected by an exact binomial test at level ``delta``, and the most aggressive threshold reached
before the first failure is chosen. Fixed-sequence testing controls the family-wise error, so
with probability at least ``1 - delta`` over the validation draw the chosen threshold's harm on
fresh samples from that distribution is below ``max_drop``. If even the most conservative
candidate fails, no early exit is certified and every step runs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack, first_exit
from rds_act.act.exits import build_exit_rule
from rds_act.errors import ConfigError, check_range

# candidate thresholds per rule, ordered from the most conservative (latest exits) onwards
CANDIDATES: dict[str, Callable[[int], list[float]]] = {
    "entropy": lambda n: torch.logspace(-5, math.log10(3.0), n).tolist(),
    "kl": lambda n: torch.logspace(-7, 0, n).tolist(),
    "acceleration": lambda n: torch.logspace(-4, 0, n).tolist(),
    "routing": lambda n: torch.logspace(-5, math.log10(3.0), n).tolist(),  # nats, as entropy
    "stability": lambda n: (1 - torch.logspace(-7, math.log10(0.5), n)).tolist(),
    "halt_head": lambda n: logit_grid(0.999, 0.05, n),  # sigma(halt) > threshold
}


def logit_grid(high: float, low: float, n: int) -> list[float]:
    """``n`` probabilities from ``high`` down to ``low``, evenly spaced in the logit. A halting
    head trained by BCE saturates: its exits move most between σ 0.97 and 0.999, where a grid
    even in σ (step ~0.024 at 40) has a single point. Rounded to 12 digits, so the ends are the
    numbers given (0.999, not 0.9989999999999999 in metrics.json)."""
    ends = torch.logit(torch.tensor([high, low], dtype=torch.float64))
    grid = torch.sigmoid(torch.linspace(float(ends[0]), float(ends[1]), n, dtype=torch.float64))
    return [round(p, 12) for p in grid.tolist()]


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact for the n of a split)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(0, k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


@dataclass
class Calibration:
    """What the calibration chose, for metrics.json (``calibrate/*``)."""

    rule: str
    threshold: float | None  # None: no candidate certified; every step runs
    max_drop: float
    delta: float
    val_drop: float
    val_harm: float
    val_avg_exit: float
    tested: int

    def metrics(self) -> dict[str, float]:
        return {
            "calibrate/threshold": float("nan") if self.threshold is None else float(self.threshold),
            "calibrate/max_drop": self.max_drop, "calibrate/delta": self.delta,
            "calibrate/val_drop": self.val_drop, "calibrate/val_harm": self.val_harm,
            "calibrate/val_avg_exit": self.val_avg_exit, "calibrate/tested": float(self.tested),
        }


def rule_at(name: str, strategy: ACTStrategy, threshold: float, task_kind: str) -> Callable:
    """The rule ``name`` at ``threshold``; for ``halt_head`` a copy of the strategy with its
    ``threshold`` (σ of the halting logit) replaced."""
    if name == "halt_head":
        rule = copy.copy(strategy)
        rule.threshold = threshold
        return rule
    return build_exit_rule(name, strategy, threshold, task_kind)


def is_own_rule(name: object) -> bool:
    """A user's rule named by its dotted path (called with the threshold, as ``eval.threshold``)."""
    return isinstance(name, str) and "." in name


def candidate_thresholds(name: str, candidates: object) -> list[float]:
    """The thresholds to test, most conservative first: ``candidates`` of the rule's own grid
    (an integer), or the list given (the only form for a rule of the user's own)."""
    if isinstance(candidates, Sequence) and not isinstance(candidates, str):
        values = list(candidates)
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                 and math.isfinite(v) for v in values):
            raise ConfigError(f"eval.calibrate.candidates={values!r} is not allowed; allowed: an "
                              "integer >= 2, or a non-empty list of finite thresholds, most "
                              "conservative first")
        return [float(v) for v in values]
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 2:
        raise ConfigError(f"eval.calibrate.candidates={candidates!r} is not allowed; allowed: an "
                          "integer >= 2, or a list of thresholds, most conservative first")
    if name not in CANDIDATES:
        raise ConfigError(f"eval.calibrate.candidates={candidates}: eval.exit_rule={name} has no "
                          "built-in grid of thresholds; give them as a list, most conservative "
                          "first, e.g. 'eval.calibrate.candidates=[0.99,0.95,0.9]'")
    return CANDIDATES[name](candidates)


def check_calibratable(name: object, strategy: ACTStrategy, threshold: object) -> None:
    if not (isinstance(name, str) and (name in CANDIDATES or is_own_rule(name))):
        raise ConfigError(f"eval.calibrate.max_drop with eval.exit_rule={name!r}: only rules with a "
                          f"threshold can be calibrated; allowed: {', '.join(CANDIDATES)}, or a "
                          "rule of your own by its dotted path (called with each candidate "
                          "threshold)")
    if name == "halt_head" and not hasattr(strategy, "threshold"):
        raise ConfigError(f"eval.calibrate.max_drop with act={strategy.name}: its halting rule has "
                          "no probability threshold to calibrate (plsd, better_plsd and overthink "
                          "have one); use eval.exit_rule=entropy, kl, stability or acceleration")
    if threshold is not None:
        raise ConfigError(f"eval.threshold={threshold} with eval.calibrate.max_drop: the calibration "
                          "picks the threshold; leave eval.threshold null")


def calibrate(
    name: str, strategy: ACTStrategy, stacks: list[StepStack], task_kind: str,
    max_drop: float, delta: float = 0.1, candidates: int | Sequence[float] = 40,
) -> Calibration:
    """Choose ``name``'s threshold on the validation ``stacks`` (every step of every sample)."""
    check_range("eval.calibrate.max_drop", max_drop, 0.0, 1.0)
    check_range("eval.calibrate.delta", delta, 0.0, 1.0)
    thresholds = candidate_thresholds(name, candidates)
    last = torch.cat([s.correct[-1].reshape(s.correct.shape[1], -1).all(1) for s in stacks])
    n = last.numel()
    chosen, chosen_stats, tested = None, None, 0
    for threshold in thresholds:
        rule = rule_at(name, strategy, threshold, task_kind)
        hits, exits = [], []
        for stack in stacks:
            exit_step = first_exit(stack.unrolled, rule, stack.steps)
            hits.append(correct_at(stack, exit_step))
            exits.append(exit_step.float())
        hit, exit_steps = torch.cat(hits), torch.cat(exits)
        harm = int((last & ~hit).sum())
        tested += 1
        if binomial_cdf(harm, n, max_drop) > delta:  # not certified: the sequence stops here
            break
        drop = float(last.float().mean() - hit.float().mean())
        chosen, chosen_stats = threshold, (drop, harm / n, float(exit_steps.mean()))
    if chosen is None:
        steps = stacks[0].steps
        return Calibration(name, None, max_drop, delta, 0.0, 0.0, float(steps), tested)
    return Calibration(name, chosen, max_drop, delta, *chosen_stats, tested)


def correct_at(stack: StepStack, exit_step: Tensor) -> Tensor:
    """Whether each sample's whole answer is right at its exit step."""
    right = stack.correct.reshape(stack.correct.shape[0], stack.correct.shape[1], -1).all(-1)
    return right.gather(0, (exit_step - 1)[None])[0]
