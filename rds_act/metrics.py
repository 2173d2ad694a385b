"""Exit / oracle metrics as torchmetrics Metrics, fed one ``ExitRecord`` per batch.

All of them score each sample at its own exit step; none looks at a batch's post-loop state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.regression import SpearmanCorrCoef
from torchmetrics.utilities.data import dim_zero_cat

from rds_act.act.base import StepStack, oracle_step
from rds_act.results import PREDICTION_COLUMNS


@dataclass
class ExitRecord:
    """Per-sample facts about one batch's exits; every tensor is [B]."""

    exit_step: Tensor
    oracle_step: Tensor
    correct_exit: Tensor
    correct_oracle: Tensor
    correct_final: Tensor
    loss_exit: Tensor
    loss_first: Tensor
    loss_oracle: Tensor
    steps: int
    steps_required: Tensor | None = None
    sq_error_exit: Tensor | None = None
    difficulty: Tensor | None = None
    # regression with a mask of changed coordinates: [B, 4] of (sum of squared errors at the
    # exit, number of changed coordinates, sum and sum of squares of their targets)
    changed: Tensor | None = None
    # one label per cell: the share of a sample's answer cells right at its exit
    cell_acc_exit: Tensor | None = None

    @classmethod
    def from_stack(
        cls, stack: StepStack, exit_step: Tensor, steps_required: Tensor | None = None,
        sq_errors: Tensor | None = None, difficulty: Tensor | None = None,
        changed_sq: Tensor | None = None, batch: dict[str, Tensor] | None = None,
        cell_acc: Tensor | None = None,
    ) -> ExitRecord:
        """Gather every sample's values at its own exit step, its oracle step and the last step."""
        t_star = oracle_step(stack.losses)

        def at(values: Tensor, step: Tensor) -> Tensor:
            return values.gather(0, (step - 1)[None]).squeeze(0)

        losses = stack.losses.detach()
        return cls(
            exit_step=exit_step, oracle_step=t_star,
            correct_exit=at(stack.correct, exit_step), correct_oracle=at(stack.correct, t_star),
            correct_final=stack.correct[-1], loss_exit=at(losses, exit_step),
            loss_first=losses[0], loss_oracle=at(losses, t_star), steps=stack.steps,
            steps_required=steps_required,
            sq_error_exit=None if sq_errors is None else at(sq_errors, exit_step),
            difficulty=difficulty,
            changed=None if changed_sq is None else changed_stats(at(changed_sq, exit_step), batch),
            cell_acc_exit=None if cell_acc is None else at(cell_acc, exit_step),
        )


def changed_stats(sq_exit: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """[B, 4]: what ``ChangedRelativeMSE`` sums over a split (see ``ExitRecord.changed``)."""
    mask, y = batch["mask"].double(), batch["y"].double()
    return torch.stack(
        [sq_exit.double(), mask.sum(-1), (y * mask).sum(-1), (y * y * mask).sum(-1)], -1
    )


def prediction_rows(record: ExitRecord, split: str, index: Tensor) -> list[dict]:
    """One row per sample (columns ``PREDICTION_COLUMNS``) from which every metric can be recomputed."""
    n = index.shape[0]
    required = record.steps_required if record.steps_required is not None else torch.zeros(n)
    difficulty = record.difficulty.tolist() if record.difficulty is not None else [""] * n
    error = record.sq_error_exit.tolist() if record.sq_error_exit is not None else [""] * n
    cells = record.cell_acc_exit.tolist() if record.cell_acc_exit is not None else [""] * n
    columns = zip(
        index.tolist(), record.exit_step.tolist(), record.oracle_step.tolist(), required.tolist(),
        difficulty, record.correct_exit.int().tolist(), record.correct_oracle.int().tolist(),
        record.correct_final.int().tolist(), record.loss_exit.tolist(), record.loss_first.tolist(),
        record.loss_oracle.tolist(), error, cells, strict=True,
    )
    return [dict(zip(PREDICTION_COLUMNS, (split, *row, record.steps), strict=True)) for row in columns]


def gather_rows(rows: list[dict]) -> list[dict]:
    """Under DDP, every process's prediction rows, in split then index order, on every process
    (so rank zero writes one complete predictions.csv); unchanged in a single process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    parts: list[list[dict] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    merged = [row for part in parts for row in part or []]
    splits = list(dict.fromkeys(row["split"] for row in merged))
    return sorted(merged, key=lambda row: (splits.index(row["split"]), row["index"]))


class _SampleMean(Metric):
    """Mean over samples of a per-sample quantity; ``value`` returns (values, mask or None)."""

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def value(self, r: ExitRecord) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def update(self, record: ExitRecord) -> None:
        values, mask = self.value(record)
        if values is None:
            return
        values = values.double()
        if mask is not None:
            values = values[mask]
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))


class ExitAccuracy(_SampleMean):
    """Accuracy of each sample's prediction at its own exit step."""

    def value(self, r):
        return r.correct_exit, None


class OracleAccuracy(_SampleMean):
    """Accuracy at t*: what a perfect halting rule would score with this backbone."""

    def value(self, r):
        return r.correct_oracle, None


class FinalAccuracy(_SampleMean):
    """Accuracy at T_max: what never halting early scores."""

    def value(self, r):
        return r.correct_final, None


class CellAccuracy(_SampleMean):
    """Share of answer cells right at each sample's exit (tasks with one label per cell)."""

    def value(self, r):
        return r.cell_acc_exit, None


class ExitLoss(_SampleMean):
    """Task loss at the exit step."""

    def value(self, r):
        return r.loss_exit, None


class ExitMSE(_SampleMean):
    """Mean squared error at the exit step (regression tasks)."""

    def value(self, r):
        return r.sq_error_exit, None


class ChangedRelativeMSE(Metric):
    """MSE at the exit on the coordinates the task's rule changes, over their variance across the
    split: 0 is exact, 1 is no better than predicting their mean (sparse_transform's target:
    <= 0.01). Unchanged coordinates, which a copy gets right, do not dilute it."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(4, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, record: ExitRecord) -> None:
        if record.changed is not None:
            self.sums += record.changed.sum(0)

    def compute(self) -> Tensor:
        sq, n, y, y2 = self.sums
        if n <= 0:
            return torch.tensor(float("nan"))
        return (sq / n) / (y2 / n - (y / n) ** 2)


class AverageExit(_SampleMean):
    """E[exit step], 1-based."""

    def value(self, r):
        return r.exit_step, None


class AverageOracleStep(_SampleMean):
    """E[t*], 1-based."""

    def value(self, r):
        return r.oracle_step, None


class ExitOracleAgreement(_SampleMean):
    """ESA = P(exit step == t*)."""

    def value(self, r):
        return r.exit_step == r.oracle_step, None


class ComputeSavingRate(_SampleMean):
    """CSR = 1 - E[exit] / T_max."""

    def value(self, r):
        return 1.0 - r.exit_step.double() / r.steps, None


class OracleComputeSavingRate(_SampleMean):
    """1 - E[t*] / T_max: the saving a perfect halting rule would get."""

    def value(self, r):
        return 1.0 - r.oracle_step.double() / r.steps, None


class _RequiredMean(_SampleMean):
    """Only counts samples whose task knows the true step count."""

    def rule(self, r: ExitRecord) -> Tensor:
        raise NotImplementedError

    def value(self, r):
        if r.steps_required is None:
            return None, None
        return self.rule(r), r.steps_required > 0


class OverRate(_RequiredMean):
    """P(exit step > steps_required): thinking longer than the task needs."""

    def rule(self, r):
        return r.exit_step > r.steps_required


class UnderRate(_RequiredMean):
    """P(exit step < steps_required): stopping before the task could be solved."""

    def rule(self, r):
        return r.exit_step < r.steps_required


class AverageRequired(_RequiredMean):
    """E[steps_required]."""

    def rule(self, r):
        return r.steps_required


class DifficultyExitCorrelation(SpearmanCorrCoef):
    """Spearman ρ(difficulty, exit step): does the model think longer on harder samples?

    NaN when the task has no difficulty or when exits (or difficulties) are all equal.
    """

    def update(self, record: ExitRecord) -> None:  # type: ignore[override]
        if record.difficulty is not None:
            super().update(record.exit_step.double(), record.difficulty.double())

    def compute(self) -> Tensor:
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(float("nan"))
        # a list per process; one tensor once DDP has gathered the processes' states
        exits, difficulty = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        if exits.unique().numel() < 2 or difficulty.unique().numel() < 2:
            return torch.tensor(float("nan"))
        return super().compute()


class InferenceGainEfficiency(Metric):
    """IGE = (E[l_1] - E[l_t*]) / E[t*]: loss reduction bought per step of thinking."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("first", "oracle", "steps", "count"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, record: ExitRecord) -> None:
        self.first += record.loss_first.double().sum()
        self.oracle += record.loss_oracle.double().sum()
        self.steps += record.oracle_step.double().sum()
        self.count += record.oracle_step.numel()

    def compute(self) -> Tensor:
        return (self.first - self.oracle) / self.steps if self.count > 0 else torch.tensor(float("nan"))


def exit_metrics(prefix: str, regression: bool = False, per_cell: bool = False) -> MetricCollection:
    """The full metric set for one split, keys like ``test/acc``."""
    metrics = {
        "acc": ExitAccuracy(), "oracle_acc": OracleAccuracy(), "final_acc": FinalAccuracy(),
        "loss": ExitLoss(), "avg_exit": AverageExit(), "oracle_step": AverageOracleStep(),
        "esa": ExitOracleAgreement(), "csr": ComputeSavingRate(),
        "oracle_csr": OracleComputeSavingRate(), "ige": InferenceGainEfficiency(),
        "over_rate": OverRate(), "under_rate": UnderRate(), "avg_required": AverageRequired(),
        "exit_rho": DifficultyExitCorrelation(),
    }
    if regression:
        metrics["mse"] = ExitMSE()
        metrics["changed_rel_mse"] = ChangedRelativeMSE()
    if per_cell:  # acc is the whole answer exact (the papers' metric); cell_acc the share of cells
        metrics["cell_acc"] = CellAccuracy()
    return MetricCollection(metrics, prefix=f"{prefix}/", compute_groups=False)


class StepCurves(Metric):
    """Per-step means for dashboards: task loss, accuracy and halting probability at each step t."""

    full_state_update = False

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        for name in ("loss", "acc", "halt_prob"):
            self.add_state(name, torch.zeros(steps, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, stack: StepStack) -> None:
        self.loss += stack.losses.detach().double().sum(1)
        self.acc += stack.correct.double().sum(1)
        self.halt_prob += torch.sigmoid(stack.unrolled.halt_logits[..., 0]).double().sum(1)
        self.count += stack.losses.shape[1]

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for name in ("loss", "acc", "halt_prob"):
            per_step = getattr(self, name) / self.count.clamp(min=1)
            out.update({f"{name}_t{t + 1:02d}": v for t, v in enumerate(per_step)})
        return out


class ExpertUsageCurves(Metric):
    """Per-step share of token-assignments per expert of an expert library, sample-weighted
    over the epoch's batches: does the recursion revisit the whole library or a few experts?"""

    full_state_update = False

    def __init__(self, steps: int, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("usage", torch.zeros(steps, num_experts, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, usage: Tensor, n: int) -> None:
        """``usage [steps, E]`` of one batch of ``n`` samples."""
        self.usage += usage.detach().double() * n
        self.count += n

    def compute(self) -> dict[str, Tensor]:
        per_step = self.usage / self.count.clamp(min=1)
        return {f"expert_usage_t{t + 1:02d}_e{e}": per_step[t, e]
                for t in range(per_step.shape[0]) for e in range(per_step.shape[1])}


def effective_rank(x: Tensor) -> Tensor:
    """exp(entropy of the normalised singular values) of a [N, d] matrix: the rank-collapse probe."""
    s = torch.linalg.svdvals(x.float() - x.float().mean(0))
    p = s / s.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
