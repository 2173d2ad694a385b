"""Optimizer pieces torch does not ship ready-made."""

from rds_act.optim.ars2_neo import ARS2Neo
from rds_act.optim.muon import MuonAdamW
from rds_act.optim.schedulers import warmup_cosine, warmup_stable_decay

__all__ = ["ARS2Neo", "MuonAdamW", "warmup_cosine", "warmup_stable_decay"]
