from rds_act.act.base import ACTStrategy, StepStack, first_exit, oracle_step, step_targets
from rds_act.act.fixed import Fixed
from rds_act.act.plsd import PLSD

__all__ = ["ACTStrategy", "StepStack", "first_exit", "oracle_step", "step_targets", "Fixed", "PLSD"]
