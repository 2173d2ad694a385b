from rds_act.models.dyntrm import DynTRM, State, StepOut

__all__ = ["DynTRM", "State", "StepOut"]
