"""training=deep_supervision: TRM's and HRM's training regime, beside the default unroll.

Each optimizer step is one supervision step: every row in flight runs one more step of the
backbone from its carried (detached) latents and is trained on that step's loss alone. A row
halts when the strategy's rule fires (not before its exploration minimum) or at ``T_max``
(TRM's N_sup); its slot is then refilled with a fresh sample, while the other rows keep their
latents and data. So halting saves training compute too, and every sample enters the carry
once: a dataloader batch is consumed by as many supervision steps as it takes to seat all its
rows, and ``train/samples`` counts each sample once.

Manual optimisation, because one dataloader batch makes several optimizer steps (Lightning's
automatic loop makes one); gradient clipping (``trainer.gradient_clip_val``) and the scheduler
are therefore applied here. The scheduler advances once per dataloader batch.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rds_act.act.base import StepStack, exploration_min_steps
from rds_act.errors import ConfigError
from rds_act.models.dyntrm import State
from rds_act.module import ACTLitModule

log = logging.getLogger(__name__)


def latent_fields(state: State) -> list[str]:
    """The per-row recurrent tensors of a backbone's state (DynTRM: h; TRM: h and z)."""
    return [f.name for f in dataclasses.fields(state) if f.name not in ("inject", "t")]


def cat_rows(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def take_rows(rows: dict[str, Tensor], idx: Tensor | slice) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in rows.items()}


@dataclass
class Carry:
    """The rows in flight: their data, latents (None until a row has run a step), supervision
    steps run so far and exploration minimum."""

    rows: dict[str, Tensor]
    latents: dict[str, Tensor] | None
    steps: Tensor
    min_steps: Tensor

    def __len__(self) -> int:
        return self.steps.shape[0]

    def keep(self, mask: Tensor) -> Carry:
        latents = None if self.latents is None else take_rows(self.latents, mask)
        return Carry(take_rows(self.rows, mask), latents, self.steps[mask], self.min_steps[mask])

    def to(self, device: torch.device) -> Carry:
        move = lambda d: None if d is None else {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return Carry(move(self.rows), move(self.latents), self.steps.to(device), self.min_steps.to(device))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "latents": self.latents, "steps": self.steps,
                "min_steps": self.min_steps}


class DeepSupervisionModule(ACTLitModule):
    """ACTLitModule trained one supervision step at a time with TRM's batch carry.

    ``explore_prob`` (the strategy's own, e.g. ``act.explore_prob``; 0 where it has none): the
    chance that a fresh row may not halt before a random minimum ``U{2..T_max}`` (TRM's
    exploration). Evaluation is the unroll's: every sample run to ``T_max`` with the per-sample
    exit (``acc``) and every step run (``final_acc``, TRM's evaluation) both reported.
    """

    clips_gradients = True  # build_trainer hands trainer.gradient_clip_val to the module

    def __init__(self, *args: Any, gradient_clip_val: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.gradient_clip_val = gradient_clip_val
        why = self.act.not_per_step
        if why:
            raise ConfigError(f"act={self.act.name} cannot train under training=deep_supervision: "
                              f"{why}; use act=qlearning act.use_continue=false or act=fixed, or "
                              "training=unroll")
        if getattr(self.model, "step_signal", False):
            raise ConfigError("model.step_signal=true with training=deep_supervision: rows in the "
                              "carry are at different steps; use model.step_signal=false")
        self.explore_prob = float(getattr(self.act, "explore_prob", 0.0))
        self.carry: Carry | None = None
        self.capacity = 0
        self._applications = 0  # this batch's, until on_train_batch_end counts them

    # -- the carry ----------------------------------------------------------------------------
    def admit(self, pending: dict[str, Tensor], capacity: int) -> dict[str, Tensor] | None:
        """Seat pending rows in the free slots; returns the rows still waiting (None if none)."""
        n = pending["index"].shape[0]
        free = capacity - (len(self.carry) if self.carry is not None else 0)
        if free <= 0:
            return pending
        seat, rest = take_rows(pending, slice(0, free)), take_rows(pending, slice(free, n))
        k = seat["index"].shape[0]
        device = seat["index"].device
        min_steps = exploration_min_steps(k, self.model.T_max, self.explore_prob, device)
        fresh = Carry(seat, None, torch.zeros(k, dtype=torch.long, device=device), min_steps)
        if self.carry is None or len(self.carry) == 0:
            self.carry = fresh
        else:
            old = self.carry
            latents = None
            if old.latents is not None:  # fresh rows: placeholders, replaced by init latents
                latents = {f: torch.cat([v, v.new_zeros((k, *v.shape[1:]))]) for f, v in old.latents.items()}
            self.carry = Carry(cat_rows(old.rows, seat), latents, torch.cat([old.steps, fresh.steps]),
                               torch.cat([old.min_steps, fresh.min_steps]))
        return rest if rest["index"].shape[0] else None

    def carried_state(self) -> State:
        """The backbone's state for the rows in flight: fresh input embedding (the encoder is
        trained every step), carried latents where a row has them, initial latents where not."""
        carry = self.carry
        state = self.model.init_state(carry.rows)
        if carry.latents is None:
            return state
        new = (carry.steps == 0).view(-1, *[1] * (state.h.dim() - 1))
        return dataclasses.replace(state, **{
            f: torch.where(new, getattr(state, f), carry.latents[f]) for f in latent_fields(state)})

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        self.capacity = max(self.capacity, batch["index"].shape[0])  # the configured batch size
        if self.carry is not None and self.carry.steps.device != batch["index"].device:
            self.carry = self.carry.to(batch["index"].device)  # restored from a checkpoint
        pending: dict[str, Tensor] | None = batch
        n_steps = 0
        while True:
            if pending is not None:
                pending = self.admit(pending, self.capacity)
            loss = self.supervision_step(optimizer)
            n_steps += 1
            if pending is None:
                break
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        if self.logs_this_step():
            self.log("train/loss", loss, prog_bar=True, batch_size=batch["index"].shape[0])
            self.log("train/supervision_steps", float(n_steps), batch_size=batch["index"].shape[0])

    def supervision_step(self, optimizer: Any) -> Tensor:
        """One step of every row in flight, one optimizer step; halted rows leave the carry."""
        carry = self.carry
        rows = carry.rows
        out = self.model.step(self.carried_state())
        self._applications += len(carry) * self.model.block_applications
        losses = self.task_loss.loss(out.pred[None], rows)
        with torch.no_grad():
            correct = self.task_loss.correct(out.pred[None], rows)
        unrolled = self.model.stacked([out])
        stack = StepStack(unrolled, losses, correct, self.task_loss)
        loss, logs = self.act.loss(stack, rows)
        if unrolled.aux_loss is not None:  # the backbone's own term, as under training=unroll
            loss = loss + unrolled.aux_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step} with "
                f"act={self.act.name} under training=deep_supervision; lower optimizer.lr or check the data")
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip_val:
            self.configure_gradient_clipping(optimizer, self.gradient_clip_val, "norm")
        optimizer.step()
        with torch.no_grad():
            steps = carry.steps + 1
            rule, _ = self.act.halt(out, int(steps.max()), None)
            halt = (rule & (steps >= carry.min_steps)) | (steps >= self.model.T_max)
            self.carry = Carry(rows, {f: getattr(out.state, f).detach() for f in latent_fields(out.state)},
                               steps, carry.min_steps).keep(~halt)
            n = rows["index"].shape[0]
            if halt.any():  # accuracy at each row's exit (its last step here) and the steps it ran
                hit = correct[0][halt].float()
                weight = self.in_level({k: v[halt] for k, v in rows.items() if k == "difficulty"})
                for metric in self.train_acc.values():
                    metric.update(hit, weight)
                if self.logs_this_step():
                    self.log("train/acc", hit.mean(), batch_size=int(halt.sum()))
                    self.log("train/halt_steps", steps[halt].float().mean(), batch_size=int(halt.sum()))
        if self.logs_this_step():
            self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
            if unrolled.balance_loss is not None:
                self.log("train/balance_loss", unrolled.balance_loss.detach(), batch_size=n)
        return loss.detach()

    def batch_applications(self, batch: dict[str, Tensor]) -> int:
        """The block applications of the supervision steps this batch took (rows in flight)."""
        applications, self._applications = self._applications, 0
        return applications

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rds_act_carry"] = None if self.carry is None else self.carry.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("rds_act_carry", "absent")
        if saved == "absent":
            log.warning("training=deep_supervision: the checkpoint holds no batch carry (trained "
                        "under training=unroll); the carry starts empty")
            self.carry = None
        else:
            self.carry = None if saved is None else Carry(**saved)
