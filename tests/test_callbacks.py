"""Optional callbacks: callbacks=ema validates, checkpoints and tests with averaged weights."""

from __future__ import annotations

import json

import torch
from helpers import TINY, run_cli

from rds_act.build import build_module, build_trainer


def test_ema_callback_validates_and_saves_the_averaged_weights(compose_cfg, tmp_path):
    overrides = [a for a in TINY if not a.startswith("callbacks")]
    cfg = compose_cfg(*overrides, "callbacks=ema", "callbacks.ema.decay=0.9", "trainer.max_epochs=2",
                      "trainer.enable_progress_bar=false")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    ema = next(cb for cb in trainer.callbacks if type(cb).__name__ == "EMAWeightAveraging")
    trainer.fit(module, datamodule=datamodule)
    averaged = dict(ema._average_model.module.named_parameters())
    for name, param in module.named_parameters():  # training ends on the averaged weights
        torch.testing.assert_close(param, averaged[name])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert "current_model_state" in ckpt  # the raw weights, for resuming
    raw, saved = ckpt["current_model_state"], ckpt["state_dict"]
    moved = [k for k in saved if saved[k].is_floating_point() and not torch.equal(saved[k], raw[k])]
    assert moved, "the checkpoint holds the raw weights, not the average"
    for name in moved:
        torch.testing.assert_close(saved[name], averaged[name])


def test_last_checkpoint_is_the_newest_epoch_not_the_best(compose_cfg, tmp_path):
    """last.ckpt is what a resume continues from: it must hold the final epoch even when the
    monitored val/loss stopped improving (Lightning's own save_last copy follows the best one).
    Monitoring the epoch number in min mode makes epoch 0 the only "best" here."""
    overrides = [a for a in TINY if not a.startswith("callbacks")]
    cfg = compose_cfg(*overrides, "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                      "callbacks.model_checkpoint.monitor=epoch")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "epoch000.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2
    assert trainer.checkpoint_callback.best_model_path.endswith("epoch000.ckpt")


def test_the_runs_own_test_reads_the_averaged_weights(tmp_path):
    """Under callbacks=ema the test after fitting reads the best checkpoint's averaged weights,
    as rds-act-eval of that checkpoint does (Lightning's callback, handed the checkpoint after
    fitting, would put the raw weights back: here they differ, 125 steps at decay 0.999)."""
    args = ["task.datamodule.n_train=4000", "task.datamodule.n_val=256", "task.datamodule.n_test=256",
            "task.datamodule.n_ood=128", "logger=none", "trainer.max_epochs=4",
            "trainer.enable_progress_bar=false", "callbacks=ema"]
    proc = run_cli("rds_act.train", [*args, f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (best,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    proc = run_cli("rds_act.eval", [f"ckpt_path={best}", f"hydra.run.dir={tmp_path}/eval"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    own, again = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("run", "eval"))
    for key in ("test/acc", "test/final_acc", "test/avg_exit", "ood/acc"):
        assert own[key] == again[key], (key, own[key], again[key])
