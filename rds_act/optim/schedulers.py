"""Learning-rate schedules built from torch's own schedulers."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import (
    ConstantLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from rds_act.errors import ConfigError, check_range


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.05,
    min_lr_ratio: float = 0.1, hold_frac: float = 0.0,
) -> LRScheduler:
    """Linear warm-up over ``warmup_frac`` of the optimizer steps, the peak rate held for a further
    ``hold_frac``, then cosine decay to ``min_lr_ratio`` x each group's own base rate at the last
    step (stepped every batch). A factor per step, not a floor in absolute units: optimizers with
    two rates (muon) keep their ratio. The hold lets a run that needs many samples at the peak
    rate before it leaves a plateau (9x9 Sudoku) decay in the same run instead of a second one."""
    check_range("scheduler.warmup_frac", warmup_frac, 0.0, 1.0)
    check_range("scheduler.hold_frac", hold_frac, 0.0, 1.0)
    check_range("scheduler.min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    if warmup_frac + hold_frac >= 1.0:
        raise ConfigError(
            f"scheduler.warmup_frac={warmup_frac} + scheduler.hold_frac={hold_frac} must be < 1 "
            "(the cosine needs the rest of the run)"
        )
    total = max(1, int(total_steps))
    warmup = min(total - 1, int(warmup_frac * total))
    start = min(total - 1, warmup + int(hold_frac * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if step < start:
            return 1.0
        progress = min(1.0, (step - start) / max(1, total - start))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def warmup_stable_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.02,
    decay_frac: float = 0.2, min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """Linear warm-up, a constant learning rate, then a linear decay over the last ``decay_frac``
    of the optimizer steps to ``min_lr_ratio`` x the base rate (stepped every batch).

    Suits a curriculum: the rate stays high while new difficulty levels arrive (a cosine has
    already halved it by mid-run) and anneals only once the whole range is being trained.
    """
    check_range("scheduler.warmup_frac", warmup_frac, 0.0, 1.0)
    check_range("scheduler.decay_frac", decay_frac, 0.0, 1.0)
    check_range("scheduler.min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    if warmup_frac + decay_frac > 1.0:
        raise ConfigError(
            f"scheduler.warmup_frac={warmup_frac} + scheduler.decay_frac={decay_frac} must be <= 1"
        )
    total = max(1, int(total_steps))
    warmup = int(warmup_frac * total)
    decay = max(1, int(decay_frac * total)) if decay_frac > 0 else 0
    stable = max(0, total - warmup - decay)
    phases, milestones = [], []
    if warmup:
        phases.append(LinearLR(optimizer, 1.0 / (warmup + 1), 1.0, total_iters=warmup))
        milestones.append(warmup)
    phases.append(ConstantLR(optimizer, factor=1.0, total_iters=stable))
    if decay:
        milestones.append(warmup + stable)
        phases.append(LinearLR(optimizer, 1.0, max(min_lr_ratio, 1e-8), total_iters=decay))
    if len(phases) == 1:
        return phases[0]
    return SequentialLR(optimizer, phases, milestones=milestones)
