"""Loggers: the CSV history of a run survives a resume in the same run dir; per-step curves reach
wandb as line charts."""

from __future__ import annotations

import csv

import pytest
from helpers import TINY

from rds_act.loggers import HistoryCSVLogger


def test_resuming_in_place_appends_to_the_history(tmp_path):
    first = HistoryCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"val/acc": 0.1}, step=0)
    first.save()
    resumed = HistoryCSVLogger(save_dir=tmp_path, name="csv", version="")
    resumed.log_metrics({"val/acc": 0.5, "train/samples": 8000.0}, step=1)  # a new column
    resumed.save()
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["val/acc"] for r in rows] == ["0.1", "0.5"]
    assert [r["train/samples"] for r in rows] == ["", "8000.0"]


def test_per_step_curves_reach_wandb_as_line_charts(compose_cfg, tmp_path, monkeypatch):
    """Each validation sends wandb one line chart per quantity with the recursive step on the x
    axis, built from the same per-step values that are logged as scalars."""
    from lightning.pytorch.loggers import WandbLogger

    from rds_act.build import build_module, build_trainer

    class Recorder:
        def __init__(self):
            self.logged = []

        def log(self, data):
            self.logged.append(data)

    class RecordingWandb(WandbLogger):
        recorder = Recorder()

        @property
        def experiment(self):
            return self.recorder

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params):
            pass

    monkeypatch.setenv("WANDB_MODE", "offline")
    dashboards = [o if o != "callbacks=none" else "callbacks=dashboards" for o in TINY]
    cfg = compose_cfg(*dashboards, "trainer.max_epochs=2", "trainer.enable_progress_bar=false")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    logger = RecordingWandb(save_dir=str(tmp_path), offline=True)
    trainer._loggers = [logger]
    trainer.fit(module, datamodule=datamodule)
    charts = [c for c in logger.recorder.logged if "val_step_chart/acc" in c]
    assert len(charts) == 2  # one per epoch, none for the sanity check
    table = charts[-1]["val_step_chart/acc"].table
    assert table.columns == ["step", "acc"]
    steps = [row[0] for row in table.data]
    assert steps == list(range(1, cfg.task.T_max + 1))
    last = trainer.callback_metrics
    for step, value in table.data:
        assert value == pytest.approx(float(last[f"val_curve/acc_t{step:02d}"]))


def test_training_logs_are_made_only_on_the_steps_lightning_writes(compose_cfg, tmp_path):
    """Every ``log_every_n_steps``-th step reaches metrics.csv with the strategy's terms, and the
    steps in between make no ``self.log`` calls (each costs milliseconds on CPU)."""
    from rds_act.build import build_module, build_trainer

    cfg = compose_cfg(*TINY, "trainer.max_epochs=3", "trainer.log_every_n_steps=3",
                      "trainer.enable_progress_bar=false", "test=false")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer._loggers = [HistoryCSVLogger(save_dir=tmp_path, name="csv", version="")]
    calls = []
    log = module.log
    module.log = lambda name, *a, **k: (calls.append(name), log(name, *a, **k))[1]
    trainer.fit(module, datamodule=datamodule)
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    # 64 samples / batch 16 = 4 steps an epoch, 12 in all: written after steps 3, 6, 9, 12
    assert [int(r["step"]) for r in rows] == [2, 5, 8, 11]
    assert all(r["train/acc"] and r["train/final_acc"] and r["train/task_loss"] for r in rows)
    assert calls.count("train/loss") == 4
