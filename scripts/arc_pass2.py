"""pass@2 of a task=arc checkpoint, TRM's ARC number: vote over the augmented views.

    python scripts/arc_pass2.py ckpt_path=<run>/checkpoints/last.ckpt [task.datamodule.test_views=8]

Runs the checkpoint's test split (every evaluation puzzle's test input under each augmentation,
as its own puzzle_id) with the model's own halting, exactly as the test after training does;
takes each view's answer at its exit step, crops it at its end markers, maps it back through the
inverse augmentation, counts the distinct answers per test input and asks whether the true
output is among the top 2 (ties: the higher mean log-probability of the predicted cells). A
puzzle scores the share of its test inputs right; pass@k is the mean over the evaluation
puzzles (those without a view in the split, e.g. under a task.datamodule.n_test cap, score 0).
"""

from __future__ import annotations

import numpy as np
import torch
from _common import build, compose_from_argv, device, run_main

from rds_act.data.arc import ARCDataModule
from rds_act.errors import ConfigError


@torch.no_grad()
def predict(module, dm: ARCDataModule, split: str = "test"):
    """Per row of ``split``: its index, the predicted canvas at its exit step, that canvas's mean
    log-probability, whether the view is exactly right, and the exit step."""
    dev = device()
    module.to(dev).eval()
    dm.setup("test")
    loader = dm.test_dataloader()[split]
    index, tokens, conf, right, exits = [], [], [], [], []
    for batch in loader:
        batch = {k: v.to(dev) for k, v in batch.items()}
        stack, record = module.evaluate(batch, split)
        rows = torch.arange(batch["index"].shape[0], device=dev)
        logits = stack.unrolled.preds[record.exit_step - 1, rows].float()  # [B, 900, 12]
        logp = torch.log_softmax(logits, -1).max(-1)
        index.append(batch["index"].cpu())
        tokens.append(logp.indices.cpu())
        conf.append(logp.values.mean(-1).cpu())
        right.append(record.correct_exit.float().cpu())
        exits.append(record.exit_step.float().cpu())
    return [torch.cat(x).numpy() for x in (index, tokens, conf, right, exits)]


def main() -> None:
    cfg = compose_from_argv()
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path=<checkpoint> is required (a task=arc run's .ckpt)")
    module, dm = build(cfg)
    if not isinstance(dm, ARCDataModule):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} was trained with task={cfg.task.name}; "
                          "arc_pass2 needs a task=arc checkpoint")
    index, tokens, conf, right, exits = predict(module, dm)
    scores = dm.score(index, tokens, confidence=conf)
    print(f"ARC {dm.version} pass@2 {scores['pass@2']:.4f}  pass@1 {scores['pass@1']:.4f}  over "
          f"{int(scores['puzzles'])} evaluation puzzles ({int(scores['views'])} views; one view exact "
          f"{float(np.mean(right)):.4f}, mean exit step {float(np.mean(exits)):.2f})")


if __name__ == "__main__":
    run_main(main)
