"""A difficulty curriculum: train on an easy range of the task's own difficulty, widen it on mastery."""

from __future__ import annotations

from rds_act.errors import ConfigError, check_choice, is_positive_int

METRICS = ("final", "exit", "oracle")


class Curriculum:
    """Training samples draw their difficulty (hops, count c, non-zeros) from ``lo .. level``.

    ``level`` starts at ``start`` and grows by ``step`` (up to the task's top difficulty) each time
    the accuracy on the current range, measured on the epoch's fresh training samples, reaches
    ``threshold``. It is the task's knowledge, not the strategy's: any strategy trains with it,
    and no loss or halting rule reads it.

    ``metric`` names the accuracy that counts: ``final`` (at the last step: what the backbone can
    do, independent of a halting head that is still learning; the default) or ``exit`` (at each
    sample's own exit step) or ``oracle`` (at each sample's t*, the step with the lowest loss:
    what a loss at t* alone trains, such as ``better_plsd`` with ``ds_weight=0``, under which
    the last step is never trained and ``final`` would never promote).

    ``mix`` is the share of training samples drawn from the task's whole training range instead
    (Zaremba & Sutskever's "combined" curriculum). Without it the halting head only ever sees the
    easy range, where step 1 is right, and halts every harder sample at step 1 when it meets one
    (on val, or once promoted). The promotion accuracy counts the samples within the level only.
    Tasks that draw each sample's difficulty (rpc, parity, sparse_transform) support it.
    """

    def __init__(
        self, start: int = 2, step: int = 1, threshold: float = 0.9, metric: str = "final",
        mix: float = 0.0,
    ):
        for key, value in (("start", start), ("step", step)):
            if not is_positive_int(value):
                raise ConfigError(
                    f"task.datamodule.curriculum.{key}={value!r} must be a positive integer"
                )
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ConfigError(
                f"task.datamodule.curriculum.threshold={threshold!r} must be a number in [0, 1]"
            )
        check_choice("task.datamodule.curriculum.metric", metric, METRICS)
        if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix < 1.0:
            raise ConfigError(
                f"task.datamodule.curriculum.mix={mix!r} must be a number in [0, 1) (the share of "
                "training samples drawn from the whole range)"
            )
        self.mix = float(mix)
        self.step, self.threshold = step, float(threshold)
        self.metric = metric
        self.level = start
        self.top: int | None = None  # the task's top training difficulty, set by clamp

    def clamp(self, lo: int, hi: int) -> None:
        """Fit the level into the task's training range ``lo .. hi``."""
        self.level = max(lo, min(self.level, hi))
        self.top = hi

    @property
    def done(self) -> bool:
        return self.top is not None and self.level >= self.top

    def update(self, accuracy: float) -> bool:
        """Widen the range if ``accuracy`` on it reached the threshold; True when it widened."""
        if self.done or accuracy < self.threshold:
            return False
        self.level += self.step
        if self.top is not None:
            self.level = min(self.top, self.level)
        return True

    def state_dict(self) -> dict[str, int]:
        return {"level": self.level}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.level = int(state["level"])
        if self.top is not None:
            self.level = min(self.level, self.top)
