"""Optimizer pieces torch does not ship ready-made."""

from rds_act.optim.schedulers import warmup_cosine, warmup_stable_decay

__all__ = ["warmup_cosine", "warmup_stable_decay"]
