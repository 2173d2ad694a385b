"""Better-PLSD: train the answer at its halting target t_h, and halt with a tunable threshold."""

from __future__ import annotations

from torch import Tensor

from rds_act.act.base import StepStack
from rds_act.act.plsd import PLSD
from rds_act.errors import check_range


class BetterPLSD(PLSD):
    """Task loss = each sample's loss at its own t_h (mean over the batch), plus the PLSD BCE of
    the halt head against ``1[t >= t_h]``. Halts when ``σ(halt) > threshold``: a higher threshold
    asks for more confidence, so it never exits earlier (the accuracy/compute knob; 0.7 as in
    the seed).

    Supervising only t_h (instead of every step) lets later steps keep improving instead of being
    pulled toward answers the earlier steps can already give. Alone it is a "min over steps"
    objective that pays for spreading different guesses over the steps; ``ds_weight`` adds that
    share of the mean loss over all steps (deep supervision) so every step is pulled to the answer.
    """

    name = "better_plsd"

    def __init__(
        self, threshold: float = 0.7, halt_weight: float = 1.0, ds_weight: float = 0.0,
        tolerance: float = 0.0, halt_target: str = "loss", unsolved: str = "argmin",
    ):
        check_range("act.ds_weight", ds_weight, 0.0)
        super().__init__(halt_weight=halt_weight, threshold=threshold, tolerance=tolerance,
                         halt_target=halt_target, unsolved=unsolved)
        self.ds_weight = ds_weight

    @property
    def trains_last_step(self) -> bool:
        return self.ds_weight > 0

    def answer_loss(self, stack: StepStack, halt_at: Tensor) -> Tensor:
        at_target = stack.losses.gather(0, (halt_at - 1)[None]).mean()
        if self.ds_weight == 0:
            return at_target
        return at_target + self.ds_weight * stack.losses.mean()
