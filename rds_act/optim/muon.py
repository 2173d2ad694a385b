"""optimizer=muon: Muon on the hidden weight matrices, AdamW on everything else, handed to
Lightning as ONE optimizer so checkpoints, resume and LR schedulers need nothing special."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from rds_act.errors import ConfigError, check_choice
from rds_act.optim.ars2_neo import check_adam_args, check_number

# with parameter names, only this module's matrices are hidden weights (the repeated block)
HIDDEN_MODULE = "block"
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")

Param = Tensor | tuple[str, Tensor]


def is_hidden(param: Param) -> bool:
    """Muon's share. A named parameter: a 2-D weight inside ``block``. A bare tensor carries no
    name, so every 2-D tensor counts (embeddings and heads included)."""
    if isinstance(param, tuple):
        name, tensor = param
        return tensor.ndim == 2 and HIDDEN_MODULE in name.split(".")
    return param.ndim == 2


def split_params(params: Iterable[Param]) -> tuple[list[Param], list[Param]]:
    """``(hidden matrices, the rest)`` from parameters or ``named_parameters()``, order kept."""
    hidden: list[Param] = []
    rest: list[Param] = []
    for param in params:
        if isinstance(param, dict):
            raise ConfigError("optimizer=muon takes parameters or named parameters, not param groups; "
                              "allowed: module.parameters() or module.named_parameters()")
        (hidden if is_hidden(param) else rest).append(param)
    return hidden, rest


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` (rate ``lr``) on the hidden matrices and ``torch.optim.AdamW`` (rate
    ``adamw_lr``) on the rest, behind one Optimizer.

    Its ``param_groups`` and ``state`` are the inner optimizers' own objects, so a scheduler's
    write to ``param_groups[i]["lr"]`` reaches them, and the stock ``state_dict`` /
    ``load_state_dict`` cover both. The schedulers scale each group by a factor of its own base
    rate, so the two rates keep their ratio.
    """

    def __init__(self, params: Iterable[Param], lr: float = 0.02, adamw_lr: float = 1e-3,
                 weight_decay: float = 0.01, momentum: float = 0.95,
                 betas: Sequence[float] = (0.9, 0.95), adjust_lr_fn: str | None = None):
        betas = check_adam_args(adamw_lr, betas, 1e-8, weight_decay, lr_key="optimizer.adamw_lr")
        check_number("optimizer.lr", lr, 0.0, strict=True)
        check_number("optimizer.momentum", momentum, 0.0)
        if momentum >= 1:
            raise ConfigError(f"optimizer.momentum={momentum} is out of range; allowed: [0, 1)")
        check_choice("optimizer.adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)
        hidden, rest = split_params(params)
        inner: list[torch.optim.Optimizer] = []
        if rest:
            inner.append(torch.optim.AdamW(rest, lr=adamw_lr, betas=betas, weight_decay=weight_decay))
        if hidden:
            inner.append(torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                          adjust_lr_fn=adjust_lr_fn))
        super().__init__([group for opt in inner for group in opt.param_groups], {})
        self.inner = inner
        self._share()

    def _share(self) -> None:
        """Point the inner optimizers at this one's group dicts and state (after a load, too)."""
        start = 0
        for opt in self.inner:
            end = start + len(opt.param_groups)
            opt.param_groups = self.param_groups[start:end]
            opt.state = self.state
            start = end

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # replaces the group dicts and the state
        self._share()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluate the closure once (if given), then step both inner optimizers."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss
