from rds_act.act.act_graves import ACTGraves
from rds_act.act.base import (
    ACTStrategy,
    StepStack,
    first_exit,
    first_stable_correct,
    oracle_step,
    step_index,
    step_targets,
    tolerant_step,
)
from rds_act.act.better_plsd import BetterPLSD
from rds_act.act.exits import EntropyExit, OracleExit, StabilityExit, build_exit_rule
from rds_act.act.fixed import Fixed
from rds_act.act.overthink import Overthink
from rds_act.act.plsd import PLSD
from rds_act.act.ponder import Ponder
from rds_act.act.qlearning import QLearning

__all__ = [
    "ACTStrategy", "StepStack", "first_exit", "first_stable_correct", "oracle_step",
    "step_index", "step_targets", "tolerant_step",
    "Fixed", "PLSD", "BetterPLSD", "Overthink", "QLearning", "Ponder", "ACTGraves",
    "build_exit_rule", "EntropyExit", "StabilityExit", "OracleExit",
]
