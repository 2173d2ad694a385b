"""Adaptive evaluation vs running every sample T_max steps: samples/s and speed-up vs ideal.

    python scripts/bench_adaptive.py [ckpt_path=...ckpt] [task=rpc] [model.d_model=64] ...

With a checkpoint, the trained strategy's halting rule decides exits. Without one, a fresh model is
used with a rule that halts sample b at step (b mod T_max) + 1, i.e. an average exit of about
T_max / 2, so the figure measures the active-set compaction itself. Target: speed-up >= 0.85 x ideal
(T_max / avg_exit) at batch 1024 on CPU.
"""

from __future__ import annotations

import time

import torch
from _common import build, compose_from_argv, device, run_main

BATCH, REPEATS = 1024, 5


class SpreadExits:
    """Halts sample b at step (b mod T) + 1; carry holds each active row's original index."""

    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, step, t, carry):
        idx = carry if carry is not None else torch.arange(step.pred.shape[0], device=step.pred.device)
        return (idx % self.steps) + 1 == t, idx


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    cfg = compose_from_argv([f"task.datamodule.n_test={BATCH}", "task.datamodule.n_train=1",
                             "task.datamodule.n_val=1", "task.datamodule.n_ood=1"])
    module, dm = build(cfg)
    dev = device()
    model = module.model.to(dev).eval()
    batch = {k: v.to(dev) for k, v in dm.make_split("test", BATCH).items()}
    steps = model.T_max
    rule = module.act if cfg.get("ckpt_path") else SpreadExits(steps)
    with torch.no_grad():
        _, exits = model.adaptive_forward(batch, rule)
        t_fixed = timed(lambda: model.unroll(batch, steps), REPEATS)
        t_adapt = timed(lambda: model.adaptive_forward(batch, rule), REPEATS)
    avg_exit = exits.float().mean().item()
    ideal, speedup = steps / avg_exit, t_fixed / t_adapt
    print(f"device={dev} batch={BATCH} T_max={steps} avg_exit={avg_exit:.2f}")
    print(f"fixed    {BATCH / t_fixed:10.0f} samples/s")
    print(f"adaptive {BATCH / t_adapt:10.0f} samples/s")
    print(f"speed-up {speedup:.2f}x  ideal {ideal:.2f}x  ratio {speedup / ideal:.2f} (target >= 0.85)")


if __name__ == "__main__":
    run_main(main)
