"""Lightning callbacks of our own: the curriculum's step, the per-step dashboards, the newest
state as last.ckpt, and time-to-accuracy for the learning benchmark. The LightningModule trains
and scores; these do the cross-cutting work around it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from rds_act.loggers import log_step_charts
from rds_act.metrics import ExpertUsageCurves, StepCurves, effective_rank


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the newest epoch (``monitor: null``, one kept), and before the first one the
    state training starts from, so a run stopped in epoch 0 (SIGTERM, Ctrl-C) still leaves a
    checkpoint that resumes it, to the same metrics as a run never stopped."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.global_step == 0 and trainer.current_epoch == 0 and self.dirpath:
            trainer.save_checkpoint(f"{self.dirpath}/{self.filename}{self.FILE_EXTENSION}")


class CurriculumStep(Callback):
    """Drives the task's curriculum: after every training epoch the datamodule is told the
    epoch's training accuracy on its current range (at the exit, the last step or t*, as its
    ``metric`` says) and may widen the range; the level is logged as ``curriculum/level``.

    ``build_trainer`` attaches it to every trainer: a curriculum is part of the task, so
    ``callbacks=none`` must not stop one. Runs before the module's own epoch-end hook, which
    resets the accuracies, and before the checkpoint callbacks, which save the new level."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        curriculum = getattr(getattr(trainer, "datamodule", None), "curriculum", None)
        if curriculum is not None and curriculum.mix:  # the accuracy on the level alone
            pl_module.curriculum_level = int(trainer.datamodule.level)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        curriculum = getattr(datamodule, "curriculum", None)
        if curriculum is None:
            return
        acc = pl_module.train_accuracy(curriculum.metric)
        datamodule.promote(acc)
        pl_module.log("curriculum/level", float(datamodule.level))
        pl_module.log("curriculum/acc", acc)


class StepDashboards(Callback):
    """Per-step validation curves for the dashboards (``val_curve/*``): task loss, accuracy and
    halting probability at each step, the effective rank of the pooled state (first batch), and
    with an expert library each step's share of assignments per expert; on wandb also as line
    charts over the recursive step. Reads the stack each validation step returns."""

    def __init__(self) -> None:
        self.curves: StepCurves | None = None
        self.usage: ExpertUsageCurves | None = None
        self.erank: list[Tensor] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        model = pl_module.model
        self.curves = StepCurves(model.T_max).to(pl_module.device)
        experts = getattr(model, "experts", None)
        self.usage = (ExpertUsageCurves(model.T_max, experts.num_experts).to(pl_module.device)
                      if experts is not None else None)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if outputs is None or pl_module.split_of("validate", dataloader_idx) != "val":
            return
        stack = outputs
        self.curves.to(stack.losses.device).update(stack)
        if self.usage is not None:
            self.usage.to(stack.losses.device).update(stack.unrolled.expert_usage, batch["index"].shape[0])
        if batch_idx == 0:
            self.erank = [effective_rank(s) for s in stack.unrolled.summaries]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.erank is None:
            return
        curves = {f"val_curve/{k}": v for k, v in self.curves.compute().items()}
        curves.update({f"val_curve/erank_t{t + 1:02d}": v for t, v in enumerate(self.erank)})
        if self.usage is not None:
            curves.update({f"val_curve/{k}": v for k, v in self.usage.compute().items()})
            self.usage.reset()
        pl_module.log_dict(curves)
        if not trainer.sanity_checking:
            log_step_charts(trainer.loggers, curves, trainer.current_epoch)
        self.curves.reset()
        self.erank = None


class TimeToAccuracy(Callback):
    """Records the training samples and wall seconds at which ``metric`` first reaches each
    threshold (checked after every validation); ``stop`` ends training once the last is reached.

    ``reached[threshold] = (samples, seconds, epoch)``; samples come from the module's
    ``samples_seen`` (all ranks together), so the figure compares across machines.
    ``on_reach(threshold, record)`` is called as each is reached, so a long run that is stopped
    early has still reported what it reached.
    """

    def __init__(
        self, thresholds: Sequence[float] = (0.5, 0.9, 0.99), metric: str = "val/acc",
        stop: bool = False, on_reach: Callable[[float, tuple[int, float, int]], None] | None = None,
    ):
        self.thresholds, self.metric, self.stop = sorted(thresholds), metric, stop
        self.on_reach = on_reach
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
                if self.on_reach is not None:
                    self.on_reach(threshold, self.reached[threshold])
        if self.stop and self.done:
            trainer.should_stop = True

    @property
    def done(self) -> bool:
        """Every threshold reached."""
        return len(self.reached) == len(self.thresholds)
