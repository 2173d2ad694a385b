"""Training-free exit rules for evaluation, next to the strategy's own halt head.

Each rule is a callable ``(step, t, carry) -> (halt BoolTensor[B], carry)`` whose carry holds
per-sample rows, so ``DynTRM.adaptive_forward`` can compact it when samples leave. The oracle
needs every step's loss and instead offers ``exit_steps(stack)``, which the evaluator prefers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rds_act.act.base import ACTStrategy, StepStack, oracle_step
from rds_act.act.fixed import Fixed
from rds_act.errors import ConfigError, check_choice, check_range, locate
from rds_act.models.dyntrm import StepOut

EXIT_RULES = ("halt_head", "entropy", "stability", "kl", "acceleration", "routing", "oracle", "fixed")
DEFAULT_THRESHOLDS = {"entropy": 0.5, "stability": 0.99, "kl": 5e-4, "acceleration": 0.05,
                      "routing": 0.1}


class EntropyExit:
    """Exit once the predictive entropy (nats; mean over positions) drops below ``threshold``."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLDS["entropy"]):
        check_range("eval.threshold", threshold, 0.0)
        self.threshold = threshold

    def __call__(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        logp = F.log_softmax(step.pred.float(), -1)
        entropy = -(logp.exp() * logp).sum(-1)
        entropy = entropy.reshape(entropy.shape[0], -1).mean(1)
        return entropy < self.threshold, carry


class StabilityExit:
    """Exit once the pooled state stops moving: cosine(summary_t, summary_{t-1}) > threshold.

    Never exits at t = 1 (nothing to compare with); the carry is the previous summary.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLDS["stability"]):
        check_range("eval.threshold", threshold, -1.0, 1.0)
        self.threshold = threshold

    def __call__(self, step: StepOut, t: int, carry: Tensor | None = None) -> tuple[Tensor, Any]:
        summary = step.summary.detach().float().reshape(step.summary.shape[0], -1)
        if carry is None:
            halt = torch.zeros(summary.shape[0], dtype=torch.bool, device=summary.device)
        else:
            halt = F.cosine_similarity(summary, carry, dim=-1) > self.threshold
        return halt, summary


class KLExit:
    """Exit once successive predictions agree: KL(p_t || p_{t-1}) (nats, mean over positions)
    below ``threshold`` (Huginn's rule, Geiping et al. 2025, there 5e-4). Never exits at t = 1;
    the carry is the previous step's log-probabilities."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLDS["kl"]):
        check_range("eval.threshold", threshold, 0.0)
        self.threshold = threshold

    def __call__(self, step: StepOut, t: int, carry: Tensor | None = None) -> tuple[Tensor, Any]:
        logp = F.log_softmax(step.pred.detach().float(), -1)
        if carry is None:
            halt = torch.zeros(logp.shape[0], dtype=torch.bool, device=logp.device)
        else:
            kl = (logp.exp() * (logp - carry)).sum(-1)
            halt = kl.reshape(kl.shape[0], -1).mean(1) < self.threshold
        return halt, logp


class AccelerationExit:
    """Exit once the state's step size stops changing: with ``s_t = |summary_t - summary_{t-1}|``
    (the pooled state's move at step t), exit when the second difference ``|s_t - s_{t-1}|`` is
    below ``threshold`` times ``s_{t-1}`` (Pappone et al. 2025's second-order rule, relative so
    that one threshold serves any state scale). Never exits before t = 3; the carry is the
    previous summary and step size."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLDS["acceleration"]):
        check_range("eval.threshold", threshold, 0.0)
        self.threshold = threshold

    def __call__(self, step: StepOut, t: int, carry: tuple[Tensor, Tensor] | None = None
                 ) -> tuple[Tensor, Any]:
        summary = step.summary.detach().float().reshape(step.summary.shape[0], -1)
        n = summary.shape[0]
        if carry is None:  # t = 1: no step yet; the size is marked unknown (NaN)
            return torch.zeros(n, dtype=torch.bool, device=summary.device), (
                summary, torch.full((n,), float("nan"), device=summary.device))
        previous, last_size = carry
        size = (summary - previous).norm(dim=-1)
        halt = (size - last_size).abs() < self.threshold * last_size  # False while NaN
        return halt, (summary, size)


class RoutingExit:
    """Exit once the expert library routes the sample sparsely: its tokens' mean router entropy
    (nats; 0 = every token sure of one expert, ln E = no preference) below ``threshold``. The
    seed notes' activation-sparsity signal: a sample whose path through the experts has settled
    on a specialised route is taken as decided. Needs ``model=dyntrm_moe`` (an expert library)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLDS["routing"]):
        check_range("eval.threshold", threshold, 0.0)
        self.threshold = threshold

    def __call__(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        if step.routing is None:
            raise ConfigError("eval.exit_rule=routing reads the expert library's routing, but this "
                              "model has none; use a model with experts (model=dyntrm_moe) or "
                              "another rule (entropy, kl, stability, acceleration)")
        return step.routing.entropy < self.threshold, carry


class OracleExit:
    """Exit at ``t* = argmin_t ℓ_t``: an upper bound for any halting rule, not a real one."""

    def exit_steps(self, stack: StepStack) -> Tensor:
        return oracle_step(stack.losses)

    def __call__(self, step: StepOut, t: int, carry: Any = None) -> tuple[Tensor, Any]:
        raise ConfigError("eval.exit_rule=oracle needs every step's loss, so it cannot decide step by "
                          "step (adaptive inference); use it only for metrics on the full stack")


def external_exit_rule(name: Any, threshold: float | None) -> Callable:
    """A rule kept outside the package: ``eval.exit_rule=my_pkg.exits.MyRule`` (a dotted path to
    a class or factory, called with ``threshold`` when one is given) or a mapping with
    ``_target_`` (instantiated as Hydra does). It must follow the contract above."""
    import hydra

    if isinstance(name, str):
        factory = locate(name, "eval.exit_rule")
    elif hasattr(name, "get") and name.get("_target_"):
        locate(str(name.get("_target_")), "eval.exit_rule._target_")
    else:
        raise ConfigError(f"eval.exit_rule={name!r}: allowed: {', '.join(EXIT_RULES)}, a dotted "
                          "path to a rule class on PYTHONPATH, or {_target_: ...}")
    try:
        if isinstance(name, str):
            rule = factory() if threshold is None else factory(threshold)
        else:
            rule = hydra.utils.instantiate(name)
    except Exception as exc:  # noqa: BLE001 - construction errors of user code, any kind
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"eval.exit_rule={name!r} cannot be built ({type(cause).__name__}: "
                          f"{str(cause).splitlines()[0] if str(cause) else ''})") from None
    if not callable(rule):
        raise ConfigError(f"eval.exit_rule={name!r} built a {type(rule).__name__}, which is not "
                          "callable as (step, t, carry) -> (halt, carry)")
    return rule


def build_exit_rule(
    name: Any,
    strategy: ACTStrategy,
    threshold: float | None = None,
    task_kind: str = "classification",
) -> Callable:
    """The exit rule called ``name``; ``threshold`` (None: the rule's default) is only for
    ``entropy`` (default 0.5 nats), ``stability`` (default cosine 0.99), ``kl`` (default 5e-4
    nats), ``acceleration`` (default 0.05 of the last step size) and ``routing`` (default 0.1
    nats of router entropy).

    ``halt_head`` returns ``strategy`` itself (tune it through the strategy, e.g. ``act.threshold``).
    ``entropy`` needs class probabilities, so it is refused for ``task_kind='regression'``.
    A dotted name or a ``_target_`` mapping is a user's own rule (``external_exit_rule``).
    """
    if not isinstance(name, str) or "." in name:
        return external_exit_rule(name, threshold)
    check_choice("eval.exit_rule", name, EXIT_RULES)
    if threshold is not None and name not in DEFAULT_THRESHOLDS:
        raise ConfigError(f"eval.threshold={threshold} does not apply to eval.exit_rule={name}; only "
                          f"{', '.join(DEFAULT_THRESHOLDS)} take one (leave it null)")
    if name == "halt_head":
        return strategy
    if name == "fixed":
        return Fixed()
    if name == "oracle":
        return OracleExit()
    if name == "entropy":
        if task_kind == "regression":
            raise ConfigError("eval.exit_rule=entropy needs a predicted class distribution, but this "
                              "task is regression; use eval.exit_rule=stability or halt_head")
        return EntropyExit(DEFAULT_THRESHOLDS["entropy"] if threshold is None else threshold)
    if name == "kl":
        if task_kind == "regression":
            raise ConfigError("eval.exit_rule=kl needs a predicted class distribution, but this "
                              "task is regression; use eval.exit_rule=stability or acceleration")
        return KLExit(DEFAULT_THRESHOLDS["kl"] if threshold is None else threshold)
    if name == "acceleration":
        return AccelerationExit(DEFAULT_THRESHOLDS["acceleration"] if threshold is None else threshold)
    if name == "routing":
        return RoutingExit(DEFAULT_THRESHOLDS["routing"] if threshold is None else threshold)
    return StabilityExit(DEFAULT_THRESHOLDS["stability"] if threshold is None else threshold)
