"""optimizer=ars2_neo: Adam's preconditioned step, orthogonalised on weight matrices (as Muon does
with momentum) so every direction of a matrix moves alike, with an optional sharpness-aware (SAM)
perturbation; vectors take a plain AdamW step.

``newton_schulz`` and ``check_adam_args`` are shared with ``rds_act.optim.muon``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from rds_act.errors import ConfigError

# the quintic's coefficients (Keller Jordan's Muon): they pull every singular value of a
# Frobenius-normalised matrix into roughly [0.7, 1.2] within five iterations
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def newton_schulz(update: Tensor, steps: int = NS_STEPS) -> Tensor:
    """An approximate polar factor U Vᵀ of the matrix ``update`` (U S Vᵀ): cheaper than an SVD,
    and only roughly orthogonal, which is all an update direction needs."""
    a, b, c = NS_COEFFICIENTS
    x = update.float()
    x = x / (x.norm() + 1e-7)  # singular values <= 1, where the iteration converges
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the short side's Gram matrix: smaller products
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(update.dtype)


def check_number(name: str, value: Any, low: float, strict: bool = False) -> None:
    """ConfigError unless ``value`` is a finite number ``>= low`` (``> low`` when strict)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        bound = ">" if strict else ">="
        raise ConfigError(f"{name}={value!r} is out of range; allowed: a number {bound} {low}")


def check_adam_args(lr: float, betas: Sequence[float], eps: float, weight_decay: float,
                    lr_key: str = "optimizer.lr") -> tuple[float, float]:
    """Validate Adam's hyper-parameters (keys as typed in the config); returns ``betas`` as a tuple."""
    check_number(lr_key, lr, 0.0, strict=True)
    check_number("optimizer.eps", eps, 0.0, strict=True)
    check_number("optimizer.weight_decay", weight_decay, 0.0)
    try:
        pair = tuple(float(b) for b in betas)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(0.0 <= b < 1.0 for b in pair):
        shown = list(betas) if isinstance(betas, Iterable) and not isinstance(betas, str) else betas
        raise ConfigError(f"optimizer.betas={shown!r} is not allowed; allowed: two numbers in [0, 1)")
    return pair  # type: ignore[return-value]


class ARS2Neo(torch.optim.Optimizer):
    """Matrices: Adam moments with bias correction, the step ``m̂ / (√v̂ + ε)`` orthogonalised by
    Newton–Schulz and rescaled back to that step's RMS (so ``lr`` means what it means for Adam),
    decoupled weight decay. Other shapes: the same step without orthogonalising (AdamW).

    ``rho > 0`` takes the step with the gradient at ``w + rho g / ||g||`` (SAM), which needs
    ``step(closure)``: the closure runs twice per step (Lightning passes one). ``rho = 0`` is the
    plain step with one closure call.
    """

    def __init__(self, params: Iterable[Any], lr: float = 5e-4, betas: Sequence[float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0, rho: float = 0.02):
        betas = check_adam_args(lr, betas, eps, weight_decay)
        check_number("optimizer.rho", rho, 0.0)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, rho=rho))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update; with ``rho > 0`` the closure is evaluated at ``w`` and at the perturbed point."""
        sharp = any(group["rho"] > 0 for group in self.param_groups)
        if sharp and closure is None:
            rho = max(group["rho"] for group in self.param_groups)
            raise ConfigError(f"optimizer.rho={rho} needs step(closure) (precision=16-mixed steps "
                              "without one); allowed: optimizer.rho=0, or a closure")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if sharp:
            saved = self._perturb()
            self.zero_grad()  # the perturbed gradient alone, whatever the closure does
            with torch.enable_grad():
                closure()
            for p, w in saved.items():
                p.copy_(w)
        self._update()
        return loss

    def _perturb(self) -> dict[Tensor, Tensor]:
        """Move each parameter by ``rho g / ||g||`` (one norm over all gradients); returns the
        original values to restore."""
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return {}
        device = grads[0].device
        norm = torch.linalg.vector_norm(torch.stack([g.norm().to(device) for g in grads]))
        saved = {}
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is not None:
                    saved[p] = p.clone()
                    p.add_(p.grad * scale.to(p.device))
        return saved

    def _update(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                u = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                if p.ndim == 2:
                    ortho = newton_schulz(u)
                    u = ortho * (u.norm() / ortho.norm().clamp_min(1e-12))  # RMS of u, kept
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(u, alpha=-lr)
