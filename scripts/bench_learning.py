"""Time to accuracy: training samples and wall seconds until a config reaches 0.5 / 0.9 / 0.95 / 0.99.

    python scripts/bench_learning.py experiment=rpc_solve [seed=1] [trainer.max_epochs=80] ...

Trains the named config (any overrides, as for rds-act-train; logs and checkpoints off) and
checks accuracy after every epoch on the held-out in-distribution split (`val`, drawn like
`test`), read two ways: at each sample's own exit (`val/acc`, the strategy's halting) and with
every step run (`val/final_acc`, as TRM and HRM evaluate). Stops once both have reached the last
threshold or the budget runs out. Samples are the budget that compares across machines; seconds
are this machine's.
"""

from __future__ import annotations

import sys

import lightning as L
from _common import compose_from_argv, run_main
from omegaconf import open_dict

from rds_act.build import build_module, build_trainer
from rds_act.callbacks import TimeToAccuracy
from rds_act.errors import ConfigError

THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
READINGS = {"at exit": "val/acc", "all steps": "val/final_acc"}


def main() -> None:
    cfg = compose_from_argv(["logger=none", "callbacks=none", "test=false",
                             "trainer.enable_progress_bar=false"])
    with open_dict(cfg):  # no checkpoints: Lightning's default one would write into the cwd
        cfg.trainer.enable_checkpointing = False
    if cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: bench_learning times training from "
                          "scratch; leave ckpt_path out")
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule = build_module(cfg)
    clocks = {name: TimeToAccuracy(THRESHOLDS, metric, on_reach=reporter(name))
              for name, metric in READINGS.items()}
    trainer = build_trainer(cfg, extra_callbacks=[*clocks.values(), StopWhenAllReached(clocks)])
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    last = ", ".join(f"{m} {float(metrics.get(m, float('nan'))):.4f}" for m in READINGS.values())
    print(f"task={cfg.task.name} act={cfg.act._target_.rsplit('.', 1)[-1]} "
          f"d_model={cfg.model.d_model} seed={cfg.seed}: last {last} after "
          f"{module.samples_seen:,} samples")
    for name, clock in clocks.items():
        for threshold in THRESHOLDS:
            if threshold in clock.reached:
                print(record_line(name, threshold, clock.reached[threshold]))
            else:
                print(f"{name:<10} acc >= {threshold:<4}: not reached within "
                      f"{module.samples_seen:,} samples")


def record_line(name: str, threshold: float, record: tuple[int, float, int]) -> str:
    samples, seconds, epoch = record
    return f"{name:<10} acc >= {threshold:<4}: {samples:>9,} samples  {seconds:8.1f} s  (epoch {epoch})"


def reporter(name: str):
    """Prints a record the moment it is reached (to stderr, so stdout keeps the summary alone):
    a run stopped early has still said what it reached."""
    return lambda threshold, record: print(f"reached: {record_line(name, threshold, record)}",
                                           file=sys.stderr, flush=True)


class StopWhenAllReached(L.Callback):
    """Ends training once every clock has seen its last threshold (after their own checks)."""

    def __init__(self, clocks: dict[str, TimeToAccuracy]):
        self.clocks = clocks

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if all(clock.done for clock in self.clocks.values()):
            trainer.should_stop = True


if __name__ == "__main__":
    run_main(main)
