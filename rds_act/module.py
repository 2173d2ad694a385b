"""ACTLitModule: the one LightningModule, pairing the DynTRM backbone with one ACT strategy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from rds_act.act.base import ACTStrategy, StepStack, first_exit, oracle_step
from rds_act.data.base import named_loaders
from rds_act.errors import ConfigError
from rds_act.losses import TaskLoss
from rds_act.metrics import ExitRecord, exit_metrics, gather_rows, prediction_rows
from rds_act.models.dyntrm import DynTRM


class ACTLitModule(LightningModule):
    """Trains by unrolling all ``T_max`` steps and handing the stack to ``act`` (the ACT strategy
    of the ``act`` config group); evaluates by halting each sample on its own and scoring it
    with its own prediction at its own exit step.

    ``exit_rule`` (default: the strategy's own ``halt``) decides exits at evaluation. The
    curriculum and the per-step dashboards are callbacks (``rds_act.callbacks``); each
    validation step returns its stack for them.
    """

    def __init__(
        self,
        model: DynTRM,
        act: ACTStrategy,
        task_loss: TaskLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        ood_T_max: int | None = None,
        exit_rule: Callable | None = None,
        run_config: dict[str, Any] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__()
        self.model, self.act, self.task_loss = model, act, task_loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.exit_rule = exit_rule if exit_rule is not None else act
        self.ood_T_max = int(ood_T_max or model.T_max)
        self.run_config = run_config or {}
        regression = task_loss.kind == "regression"
        self.metrics = nn.ModuleDict(
            {split: exit_metrics(split, regression, getattr(task_loss, "per_cell", False))
             for split in ("val", "test", "ood")}
        )
        # accuracy on the epoch's training samples: at each sample's exit, at the last step and
        # at its t* (the lowest-loss step); the curriculum promotes on the one it names
        self.train_acc = nn.ModuleDict(
            {"exit": MeanMetric(), "final": MeanMetric(), "oracle": MeanMetric()}
        )
        # the curriculum's level while it mixes in the whole range (``CurriculumStep`` sets it):
        # the training accuracies then count the samples within the level only
        self.curriculum_level: int | None = None
        self.samples_seen = 0  # training samples so far, all ranks together (learning curves)
        self.applications_seen = 0  # applications of the shared block in training (compute)
        self.predictions: list[dict] = []  # per-sample rows of the last test run

    # -- shared -------------------------------------------------------------------------------
    def eval_splits(self, stage: str) -> list[str]:
        """The splits of the stage's dataloaders now running, by name, in dataloader order."""
        loaders = self.trainer.val_dataloaders if stage == "validate" else self.trainer.test_dataloaders
        return list(named_loaders(loaders, stage))

    def split_of(self, stage: str, dataloader_idx: int) -> str:
        """The split a stage's dataloader ``dataloader_idx`` serves, by the name it is served under."""
        return self.eval_splits(stage)[dataloader_idx]

    def steps_for(self, split: str) -> int:
        return self.ood_T_max if split == "ood" else self.model.T_max

    def stack(self, batch: dict[str, Tensor], steps: int | None = None) -> StepStack:
        """Unroll the backbone and score every step with the task loss."""
        unrolled = self.model.unroll(batch, steps)
        losses = self.task_loss.loss(unrolled.preds, batch)
        with torch.no_grad():
            correct = self.task_loss.correct(unrolled.preds, batch)
        return StepStack(unrolled, losses, correct, self.task_loss)

    def evaluate(self, batch: dict[str, Tensor], split: str) -> tuple[StepStack, ExitRecord]:
        """Per-sample exits on the full stack (the masked reference used for metrics)."""
        steps = self.steps_for(split)
        stack = self.stack(batch, steps)
        if hasattr(self.exit_rule, "exit_steps"):  # rules that need the whole stack (oracle)
            exit_step = self.exit_rule.exit_steps(stack)
        else:
            exit_step = first_exit(stack.unrolled, self.exit_rule, steps)
        sq = self.task_loss.sq_error(stack.unrolled.preds, batch)
        changed = self.task_loss.changed_sq_error(stack.unrolled.preds, batch)
        cells = self.task_loss.cell_accuracy(stack.unrolled.preds, batch)
        record = ExitRecord.from_stack(
            stack, exit_step, batch.get("steps_required"), sq, batch.get("difficulty"), changed, batch,
            cells,
        )
        return stack, record

    # -- training -----------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.act.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        stack = self.stack(batch)
        loss, logs = self.act.loss(stack, batch)
        if stack.unrolled.aux_loss is not None:  # the backbone's own term, under every strategy
            loss = loss + stack.unrolled.aux_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                f"step {self.global_step} with act={self.act.name}; "
                "lower optimizer.lr or check the data"
            )
        n = batch["index"].shape[0]
        with torch.no_grad():
            exit_step = first_exit(stack.unrolled, self.act, stack.steps)
            hit = stack.correct.gather(0, (exit_step - 1)[None])[0].float()
            at_oracle = stack.correct.gather(0, (oracle_step(stack.losses) - 1)[None])[0].float()
        final = stack.correct[-1].float()
        weight = self.in_level(batch)
        self.train_acc["exit"].update(hit, weight)
        self.train_acc["final"].update(final, weight)
        self.train_acc["oracle"].update(at_oracle, weight)
        if not self.logs_this_step():
            return loss
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
        self.log("train/acc", hit.mean(), batch_size=n)
        self.log("train/final_acc", final.mean(), batch_size=n)
        if stack.unrolled.balance_loss is not None:
            self.log("train/balance_loss", stack.unrolled.balance_loss.detach(), batch_size=n)
        return loss

    def logs_this_step(self) -> bool:
        """Whether Lightning writes this training step's logs (every ``log_every_n_steps``, and
        every step of a ``fast_dev_run``).

        ``self.log`` costs milliseconds a call on CPU, a visible share of a small model's step; on
        the steps in between, what it records is overwritten before any logger or the progress bar
        reads it.
        The check is the one Lightning's own LearningRateMonitor and ThroughputMonitor make.
        """
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None)
        return connector is None or bool(trainer.fast_dev_run) or bool(connector.should_update_logs)

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Tensor], batch_idx: int) -> None:
        # counted here, once per batch: a sharpness-aware optimizer (ars2_neo, rho > 0) runs
        # training_step twice on the same batch
        self.samples_seen += batch["index"].shape[0] * self.trainer.world_size
        self.applications_seen += self.batch_applications(batch) * self.trainer.world_size

    def batch_applications(self, batch: dict[str, Tensor]) -> int:
        """Shared-block applications one training batch cost: every row unrolled to T_max."""
        return batch["index"].shape[0] * self.model.T_max * self.model.block_applications

    def in_level(self, batch: dict[str, Tensor]) -> Tensor | float:
        """Weights of a training batch's rows in the epoch's accuracies: 1 within the
        curriculum's level, 0 for the rows ``curriculum.mix`` drew above it (1 without a mix)."""
        if self.curriculum_level is None or "difficulty" not in batch:
            return 1.0
        return (batch["difficulty"] <= self.curriculum_level).float()

    def train_accuracy(self, name: str) -> float:
        """The epoch's training accuracy so far: ``exit``, ``final`` or ``oracle`` (t*)."""
        return float(self.train_acc[name].compute())

    def on_train_epoch_end(self) -> None:
        for metric in self.train_acc.values():  # after CurriculumStep has read them
            metric.reset()

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch: dict[str, Tensor], idx: int) -> StepStack:
        split = self.split_of(stage, idx)
        stack, record = self.evaluate(batch, split)
        self.metrics[split].update(record)
        if stage == "test":
            self.predictions += prediction_rows(record, split, batch["index"].cpu())
        return stack

    def _eval_epoch_end(self, stage: str) -> None:
        if stage == "validate":
            self.log("train/samples", float(self.samples_seen))
            self.log("train/block_applications", float(self.applications_seen))
        for split in self.eval_splits(stage):
            self.log_dict(self.metrics[split].compute())
            self.metrics[split].reset()

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> StepStack:
        return self._eval_step("validate", batch, dataloader_idx)  # the stack, for StepDashboards

    def on_test_epoch_start(self) -> None:
        self.predictions = []

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("validate")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
        self.predictions = gather_rows(self.predictions)

    # -- prediction -----------------------------------------------------------------------------
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Real per-sample halting: each step runs only on the samples still thinking.

        A rule that cannot decide step by step (the oracle) raises its own ConfigError here.
        """
        pred, exit_step = self.model.adaptive_forward(batch, self.exit_rule)
        return {"index": batch["index"], "pred": pred, "exit_step": exit_step}

    # -- plumbing -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # names let optimizer=muon keep Muon to the shared block's matrices (AdamW for the rest)
        optimizer = self.optimizer_factory(params=self.named_parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """``trainer.gradient_clip_val`` by norm, one norm per objective: where the halting loss
        sends no gradient into the backbone (``halt_grad=0``), the halting head is clipped on its
        own, so the size of its gradients cannot shrink the backbone's step either (one global norm
        over both let the halting targets steer the backbone that halt_grad=0 keeps them off)."""
        head = getattr(self.model, "halt_head", None)
        if (not gradient_clip_val or gradient_clip_algorithm not in (None, "norm") or head is None
                or getattr(self.model, "halt_grad", 1.0) > 0):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        in_head = {id(p) for p in head.parameters()}
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        for part in ([p for p in params if id(p) in in_head], [p for p in params if id(p) not in in_head]):
            if part:
                nn.utils.clip_grad_norm_(part, float(gradient_clip_val))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rds_act_config"] = self.run_config
        checkpoint["rds_act_samples_seen"] = self.samples_seen
        checkpoint["rds_act_applications_seen"] = self.applications_seen

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> ACTLitModule:  # type: ignore[override]
        """Lightning's idiom cannot rebuild this module (its parts are built from the Hydra config
        saved in the checkpoint, not from hyperparameters): say where the loader is."""
        raise ConfigError(
            "ACTLitModule.load_from_checkpoint cannot rebuild the backbone and strategy; use "
            "rds_act.checkpoint.load_lit_module(path, **{'act.threshold': 0.9}) (overrides optional)"
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_seen = int(checkpoint.get("rds_act_samples_seen", 0))
        self.applications_seen = int(checkpoint.get("rds_act_applications_seen", 0))
