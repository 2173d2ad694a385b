"""Training-step throughput of ACTLitModule under Lightning vs a bare torch loop, same model and data,
and of the eager vs the compiled block (model.compile=true) under Lightning.

    python scripts/bench_overhead.py [task=rpc] [act=plsd] [model.d_model=64] ...

Both loops run the same module's forward, strategy loss, backward, clipping and AdamW step on the
same batches, each loop twice in alternation (bare, Lightning, bare, Lightning) and the faster of
its two runs kept, so load that comes and goes on a busy machine hits both alike; the ratio
(Lightning / bare) is the framework's overhead. Target: >= 0.95.
The compiled run's first WARMUP steps (compilation) are not timed.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from _common import build, compose_from_argv, run_main
from omegaconf import open_dict

STEPS, WARMUP = 60, 10


class StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int = WARMUP):
        self.warmup = warmup

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def lightning_time(module, dm, steps: int = STEPS, warmup: int = WARMUP) -> float:
    """Seconds for training batches ``warmup..steps-1`` under Lightning's loop."""
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[timer],
        reload_dataloaders_every_n_epochs=1,  # the datamodule draws fresh samples per epoch
    )
    trainer.fit(module, datamodule=dm)
    return timer.end - timer.start


def bare_time(module, dm, steps: int = STEPS, warmup: int = WARMUP) -> float:
    """The same batches through forward, strategy loss, backward, clipping and AdamW by hand."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = module.to(dev).train()
    opt = module.configure_optimizers()
    batches = iter(dm.train_dataloader())
    for i in range(steps):
        if i == warmup:
            start = time.perf_counter()
        batch = {k: v.to(dev) for k, v in next(batches).items()}
        stack = module.stack(batch)
        loss, _ = module.act.loss(stack, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    cfg = compose_from_argv(["task.datamodule.n_train=20000", "task.datamodule.n_val=1",
                             "task.datamodule.n_test=1", "task.datamodule.n_ood=1"])
    results = {}
    for name, run in (("bare", bare_time), ("lightning", lightning_time), ("bare2", bare_time),
                      ("lightning2", lightning_time)):
        L.seed_everything(0, verbose=False)
        module, dm = build(cfg)
        dm.setup()
        results[name] = run(module, dm)
    bare = min(results["bare"], results["bare2"])
    results["lightning"] = min(results["lightning"], results["lightning2"])
    n = (STEPS - WARMUP) * cfg.task.datamodule.batch_size
    print(f"steps timed={STEPS - WARMUP} batch={cfg.task.datamodule.batch_size}")
    print(f"bare loop  {n / bare:9.0f} samples/s")
    print(f"lightning  {n / results['lightning']:9.0f} samples/s")
    print(f"ratio {bare / results['lightning']:.2f} (target >= 0.95)")
    with open_dict(cfg):
        cfg.model.compile = True
    L.seed_everything(0, verbose=False)
    module, dm = build(cfg)
    dm.setup()
    compiled = lightning_time(module, dm)
    print(f"compiled   {n / compiled:9.0f} samples/s (model.compile=true, under Lightning)")
    print(f"compiled / eager {results['lightning'] / compiled:.2f}")


if __name__ == "__main__":
    run_main(main)
