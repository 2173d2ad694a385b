"""Lightning callbacks of our own: time-to-accuracy for the learning benchmark."""

from __future__ import annotations

import time
from collections.abc import Sequence

from lightning import Callback, LightningModule, Trainer


class TimeToAccuracy(Callback):
    """Records the training samples and wall seconds at which ``metric`` first reaches each
    threshold (checked after every validation); ``stop`` ends training once the last is reached.

    ``reached[threshold] = (samples, seconds, epoch)``; samples come from the module's
    ``samples_seen`` (all ranks together), so the figure compares across machines.
    """

    def __init__(
        self, thresholds: Sequence[float] = (0.5, 0.9, 0.99), metric: str = "val/acc",
        stop: bool = False,
    ):
        self.thresholds, self.metric, self.stop = sorted(thresholds), metric, stop
        self.reached: dict[float, tuple[int, float, int]] = {}
        self.start = time.perf_counter()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        seconds = time.perf_counter() - self.start
        for threshold in self.thresholds:
            if threshold not in self.reached and value >= threshold:
                self.reached[threshold] = (pl_module.samples_seen, seconds, trainer.current_epoch)
        if self.stop and len(self.reached) == len(self.thresholds):
            trainer.should_stop = True
