"""Could any halting head on this model's state exit at the required step? A privileged probe.

    python scripts/probe_halting.py ckpt_path=<run>/checkpoints/last.ckpt

A diagnosis, not a strategy: it fits fresh heads (a linear one, and one with a hidden layer of
256 units) on the pooled state the model's own halting head sees, after every step, with the
task's ``steps_required`` as the label (1[t >= required]: information no strategy may use),
and prints where each would exit on the test and ood splits and how often the answer there is
right, next to the model's own halting. If even these heads exit late, or early and wrong, the
state at the required step does not say that the answer is ready; no halting rule reading it can
exit on time, and the change has to come from the backbone or its training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import build, compose_from_argv, run_main
from torch import Tensor, nn

from rds_act.act import first_exit

FIT_SAMPLES, FIT_ITERS, BATCH = 8000, 1500, 2048
FIT_START = 1_000_000  # fit on val-distribution samples far from the val split's own indices


@torch.no_grad()
def trace(module, batch: dict[str, Tensor], steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """[steps, B, d] pooled states, [B] the model's own exit steps, [steps, B] right or not."""
    unrolled = module.model.eval().unroll(batch, steps)
    own = first_exit(unrolled, module.exit_rule, steps)
    right = module.task_loss.correct(unrolled.preds, batch).float()
    return unrolled.summaries.float(), own, right


def exits(halt: Tensor) -> Tensor:
    """1-based first step with halt (the last step if none)."""
    halt = halt.clone()
    halt[-1] = True
    return halt.float().argmax(0) + 1


def fit(states: Tensor, required: Tensor, hidden: int) -> nn.Module:
    torch.manual_seed(0)
    steps, _, d = states.shape
    target = (torch.arange(1, steps + 1)[:, None] >= required[None]).float().reshape(-1)
    x = states.reshape(-1, d)
    head = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 1)) if hidden else nn.Linear(d, 1)
    opt = torch.optim.Adam(head.parameters(), 1e-3 if hidden else 1e-2)
    for _ in range(FIT_ITERS):
        idx = torch.randint(0, len(target), (BATCH,))
        loss = F.binary_cross_entropy_with_logits(head(x[idx]).squeeze(-1), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def report(name: str, exit_step: Tensor, right: Tensor, required: Tensor) -> None:
    acc = right.gather(0, (exit_step - 1)[None]).mean()
    late = [f"{float((exit_step - required)[required == r].float().mean()):+.2f}"
            for r in range(1, int(required.max()) + 1) if (required == r).any()]
    print(f"  {name:<22} exit {exit_step.float().mean():5.2f} / required {required.float().mean():4.2f}"
          f"  acc at exit {acc:.3f}  exit - required by required: {' '.join(late)}")


def main() -> None:
    cfg = compose_from_argv()
    if not cfg.get("ckpt_path"):
        raise SystemExit("error: ckpt_path=<checkpoint> is required (the probe reads a trained model)")
    module, dm = build(cfg)
    fit_batch = dm.make_split("val", FIT_SAMPLES, start=FIT_START)
    if not bool((fit_batch["steps_required"] > 0).all()):
        raise SystemExit(f"error: task={cfg.task.name} has no steps_required; the probe needs one")
    splits = {s: dm.make_split(s) for s in ("test", "ood")}
    fit_states, _, _ = trace(module, fit_batch, module.model.T_max)
    mean, std = fit_states.mean((0, 1)), fit_states.std((0, 1)) + 1e-6
    heads = {f"probe, hidden {h}": fit((fit_states - mean) / std, fit_batch["steps_required"], h)
             for h in (0, 256)}
    for split, batch in splits.items():
        states, own, right = trace(module, batch, module.steps_for(split))
        required = batch["steps_required"]
        print(f"{split}: accuracy at each step {' '.join(f'{a:.2f}' for a in right.mean(1).tolist())}")
        report("model's own halting", own, right, required)
        with torch.no_grad():
            for name, head in heads.items():
                report(name, exits(head((states - mean) / std).squeeze(-1) > 0), right, required)


if __name__ == "__main__":
    run_main(main)
