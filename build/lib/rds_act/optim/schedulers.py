"""Learning-rate schedules built from torch's own schedulers."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from rds_act.errors import check_range


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.05,
    min_lr_ratio: float = 0.1,
) -> LRScheduler:
    """Linear warm-up over ``warmup_frac`` of the optimizer steps, then cosine decay to
    ``min_lr_ratio`` x the base learning rate at the last step (stepped every batch)."""
    check_range("scheduler.warmup_frac", warmup_frac, 0.0, 1.0)
    check_range("scheduler.min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    total = max(1, int(total_steps))
    warmup = min(total - 1, int(warmup_frac * total))
    base_lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=base_lr * min_lr_ratio)
    if warmup == 0:
        return cosine
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
