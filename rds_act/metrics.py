"""Exit / oracle metrics as torchmetrics Metrics, fed one ``ExitRecord`` per batch.

All of them score each sample at its own exit step; none looks at a batch's post-loop state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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

    def listed(values: Tensor | None, missing: object = "") -> list:
        return [missing] * n if values is None else values.tolist()

    columns = {
        "split": [split] * n, "index": index.tolist(), "exit_step": listed(record.exit_step),
        "oracle_step": listed(record.oracle_step),
        "steps_required": listed(record.steps_required, missing=0.0),
        "difficulty": listed(record.difficulty), "correct": listed(record.correct_exit.int()),
        "correct_oracle": listed(record.correct_oracle.int()),
        "correct_final": listed(record.correct_final.int()), "loss": listed(record.loss_exit),
        "loss_first": listed(record.loss_first), "loss_oracle": listed(record.loss_oracle),
        "error": listed(record.sq_error_exit), "cell_acc": listed(record.cell_acc_exit),
        "steps": [record.steps] * n,
    }
    # by name: a column the schema lists and this table lacks (or the reverse) fails here
    if set(columns) != set(PREDICTION_COLUMNS):
        raise KeyError(f"prediction columns {sorted(columns)} differ from the schema {PREDICTION_COLUMNS}")
    return [{name: columns[name][i] for name in PREDICTION_COLUMNS} for i in range(n)]


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


def _known_required(rule: Callable[[ExitRecord], Tensor]) -> Callable[[ExitRecord], Tensor | None]:
    """``rule`` over the samples whose task knows their true step count (None: none does)."""
    def value(r: ExitRecord) -> Tensor | None:
        return None if r.steps_required is None else rule(r)[r.steps_required > 0]
    return value


# The metrics that are a mean over samples of one per-sample value (None: not defined for this
# task); docs/metrics.md defines each.
SAMPLE_MEANS: dict[str, Callable[[ExitRecord], Tensor | None]] = {
    "acc": lambda r: r.correct_exit,              # right at its own exit step
    "oracle_acc": lambda r: r.correct_oracle,     # right at t*: a perfect halting rule's score
    "final_acc": lambda r: r.correct_final,       # right at T_max: never halting early
    "loss": lambda r: r.loss_exit,                # task loss at the exit step
    "avg_exit": lambda r: r.exit_step,            # E[exit step], 1-based
    "oracle_step": lambda r: r.oracle_step,       # E[t*], 1-based
    "esa": lambda r: r.exit_step == r.oracle_step,                  # P(exit == t*)
    "csr": lambda r: 1.0 - r.exit_step.double() / r.steps,          # 1 - E[exit] / T_max
    "oracle_csr": lambda r: 1.0 - r.oracle_step.double() / r.steps,  # 1 - E[t*] / T_max
    "over_rate": _known_required(lambda r: r.exit_step > r.steps_required),
    "under_rate": _known_required(lambda r: r.exit_step < r.steps_required),
    "avg_required": _known_required(lambda r: r.steps_required),
}
# defined for some tasks only: regression (mse) and one label per cell (cell_acc)
REGRESSION_MEANS = {"mse": lambda r: r.sq_error_exit}
PER_CELL_MEANS = {"cell_acc": lambda r: r.cell_acc_exit}  # share of answer cells right at the exit
_ALL_MEANS = {**SAMPLE_MEANS, **REGRESSION_MEANS, **PER_CELL_MEANS}


class SampleMean(Metric):
    """Mean over a split's samples of the per-sample value that the table names ``name`` (None:
    undefined for this batch, nothing counted); NaN while no sample counted. Held by name, not
    by function, so the metric pickles (ddp_spawn)."""

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, name: str, **kwargs):
        super().__init__(**kwargs)
        if name not in _ALL_MEANS:
            raise KeyError(f"no per-sample mean is named {name!r}; the table has {sorted(_ALL_MEANS)}")
        self.name = name
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, record: ExitRecord) -> None:
        values = _ALL_MEANS[self.name](record)
        if values is None:
            return
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))


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


class DifficultyExitCorrelation(SpearmanCorrCoef):
    """Spearman ρ(difficulty, exit step): does the model think longer on harder samples?

    NaN when the task has no difficulty or when exits (or difficulties) are all equal.
    """

    def __init__(self, **kwargs):
        # torchmetrics warns on every construction that the buffer keeps every pair: here two
        # numbers per evaluated sample, and the warning would land before a user's error line
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save all")
            super().__init__(**kwargs)

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
    means = [*SAMPLE_MEANS, *(REGRESSION_MEANS if regression else ()), *(PER_CELL_MEANS if per_cell else ())]
    metrics: dict[str, Metric] = {name: SampleMean(name) for name in means}
    metrics["ige"] = InferenceGainEfficiency()
    metrics["exit_rho"] = DifficultyExitCorrelation()
    if regression:
        metrics["changed_rel_mse"] = ChangedRelativeMSE()
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
