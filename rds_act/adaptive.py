"""``rds-act-eval eval.adaptive=true``: the compacted per-sample path where users evaluate.

The metrics come from unrolling every sample to the split's last step (they need every step);
the path that saves compute, ``adaptive_forward``, runs each step only on the samples still
thinking. This runs it on the test and ood splits after the test, checks that each sample's exit
and correctness equal the unrolled path's (the rows of predictions.csv), and times both paths on
the same batches, so metrics.json says what halting saves in seconds, not only in steps.
"""

from __future__ import annotations

import time

import torch
from lightning import LightningDataModule

from rds_act.data.base import named_loaders
from rds_act.errors import ConfigError
from rds_act.module import ACTLitModule


def check_adaptive(module: ACTLitModule, rule_name: object) -> None:
    """One line, before anything runs, for a rule that cannot decide step by step."""
    if hasattr(module.exit_rule, "exit_steps"):
        raise ConfigError(f"eval.adaptive=true runs each sample only until its exit, which "
                          f"eval.exit_rule={rule_name} cannot decide step by step (it needs every "
                          "step's loss); use another rule or eval.adaptive=false")


@torch.no_grad()
def adaptive_eval(module: ACTLitModule, datamodule: LightningDataModule,
                  rows: list[dict]) -> dict[str, float]:
    """``adaptive/<split>/*`` for test and ood: ``agree`` (share of samples whose exit step and
    correctness equal the unrolled path's row), ``samples_per_s`` of the compacted path,
    ``block_applications`` per sample, ``speedup`` (seconds of the unroll to the last step over
    the compacted path's, same batches) and ``ideal_speedup`` (last step / mean exit)."""
    module.eval()
    model, device = module.model, module.device
    by_split = {(r["split"], int(r["index"])): r for r in rows}
    metrics: dict[str, float] = {}
    for split, loader in named_loaders(datamodule.test_dataloader(), "test").items():
        steps = module.steps_for(split)
        n = agree = exits_sum = 0
        t_adaptive = t_unrolled = 0.0
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            start = time.perf_counter()
            pred, exit_step = model.adaptive_forward(batch, module.exit_rule, steps)
            middle = time.perf_counter()
            model.unroll(batch, steps)
            t_adaptive += middle - start
            t_unrolled += time.perf_counter() - middle
            correct = module.task_loss.correct(pred, batch)
            for i, e, c in zip(batch["index"].tolist(), exit_step.tolist(), correct.tolist(), strict=True):
                row = by_split[(split, i)]
                agree += int(int(row["exit_step"]) == e and int(row["correct"]) == int(c))
            n += exit_step.shape[0]
            exits_sum += int(exit_step.sum())
        mean_exit = exits_sum / max(n, 1)
        metrics.update({
            f"adaptive/{split}/agree": agree / max(n, 1),
            f"adaptive/{split}/samples_per_s": n / max(t_adaptive, 1e-12),
            f"adaptive/{split}/block_applications": mean_exit * model.block_applications,
            f"adaptive/{split}/speedup": t_unrolled / max(t_adaptive, 1e-12),
            f"adaptive/{split}/ideal_speedup": steps / max(mean_exit, 1e-12),
        })
        if agree < n:
            print(f"warning: adaptive {split}: {n - agree} of {n} samples exit at another step or "
                  "with another answer than the unrolled path (numerics of the smaller batches)")
        print(f"adaptive {split}: {metrics[f'adaptive/{split}/samples_per_s']:.0f} samples/s, "
              f"{metrics[f'adaptive/{split}/speedup']:.2f}x the unroll to step {steps} "
              f"(ideal {metrics[f'adaptive/{split}/ideal_speedup']:.2f}x), agree "
              f"{metrics[f'adaptive/{split}/agree']:.4f}")
    return metrics
