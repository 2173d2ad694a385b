"""Time to accuracy: training samples and wall seconds until a config reaches 0.5 / 0.9 / 0.95 / 0.99.

    python scripts/bench_learning.py experiment=rpc_solve [seed=1] [trainer.max_epochs=80] ...

Trains the named config (any overrides, as for rds-act-train; logs and checkpoints off) and
checks accuracy after every epoch on the held-out in-distribution split (`val`, drawn like
`test`); stops once the last threshold is reached or the budget runs out. Samples are the budget
that compares across machines; seconds are this machine's.
"""

from __future__ import annotations

import lightning as L
from _common import compose_from_argv, run_main

from rds_act.build import build_module, build_trainer
from rds_act.callbacks import TimeToAccuracy
from rds_act.errors import ConfigError

THRESHOLDS = (0.5, 0.9, 0.95, 0.99)


def main() -> None:
    cfg = compose_from_argv(["logger=none", "callbacks=none", "test=false",
                             "trainer.enable_progress_bar=false"])
    if cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: bench_learning times training from "
                          "scratch; leave ckpt_path out")
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule = build_module(cfg)
    clock = TimeToAccuracy(THRESHOLDS, "val/acc", stop=True)
    trainer = build_trainer(cfg, extra_callbacks=[clock])
    trainer.fit(module, datamodule=datamodule)
    final = float(trainer.callback_metrics.get("val/acc", float("nan")))
    print(f"task={cfg.task.name} act={cfg.act._target_.rsplit('.', 1)[-1]} "
          f"d_model={cfg.model.d_model} seed={cfg.seed}: final val/acc {final:.4f} after "
          f"{module.samples_seen:,} samples")
    for threshold in THRESHOLDS:
        if threshold in clock.reached:
            samples, seconds, epoch = clock.reached[threshold]
            print(f"acc >= {threshold:<4}: {samples:>9,} samples  {seconds:8.1f} s  (epoch {epoch})")
        else:
            print(f"acc >= {threshold:<4}: not reached within {module.samples_seen:,} samples")


if __name__ == "__main__":
    run_main(main)
