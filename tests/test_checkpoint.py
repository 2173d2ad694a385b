"""One way to load a checkpoint: rds-act-eval, the benchmark scripts and Lightning's
``load_from_checkpoint`` all go through ``rds_act.checkpoint``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY

from rds_act.checkpoint import load_checkpoint, load_lit_module, with_checkpoint_choices
from rds_act.errors import ConfigError
from rds_act.module import ACTLitModule
from rds_act.train import train

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def trained(compose_cfg, tmp_path) -> Path:
    """A one-epoch better_plsd run on rpc_small; returns its last checkpoint."""
    cfg = compose_cfg("act=better_plsd", *[a for a in TINY if not a.startswith("callbacks")],
                      "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "test=false")
    train(cfg)
    return tmp_path / "checkpoints" / "last.ckpt"


def test_load_lit_module_rebuilds_the_trained_module(trained):
    with pytest.raises(ConfigError, match="use rds_act.checkpoint.load_lit_module"):
        ACTLitModule.load_from_checkpoint(str(trained))
    module = load_lit_module(str(trained))
    saved = torch.load(trained, weights_only=False)
    assert type(module.act).__name__ == "BetterPLSD"
    for key, value in saved["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key
    tuned = load_lit_module(str(trained), **{"act.tolerance": 0.25})
    assert tuned.act.tolerance == 0.25 and module.act.tolerance != 0.25


def test_scripts_compose_with_the_checkpoints_groups(trained, monkeypatch):
    """A key only the checkpoint's act has (better_plsd's ds_weight) composes in the scripts too."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.setattr(sys, "argv", ["bench", f"ckpt_path={trained}", "act.ds_weight=0.5"])
    common = importlib.import_module("_common")
    cfg = common.compose_from_argv(["logger=none"])
    module, _ = common.build(cfg)
    assert type(module.act).__name__ == "BetterPLSD" and module.act.ds_weight == 0.5
    assert with_checkpoint_choices([f"ckpt_path={trained}"])[1:] == [
        "task=rpc_small", "model=dyntrm", "act=better_plsd", "optimizer=adamw"]


@pytest.mark.parametrize("content, why", [
    (None, "is not an existing file"),
    (b"garbage", "is not a readable checkpoint"),
    ({"state_dict": {}}, "was not written by rds-act-train"),
])
def test_bad_checkpoints_fail_in_one_line(tmp_path, content, why):
    path = tmp_path / "x.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    load_checkpoint.cache_clear()
    with pytest.raises(ConfigError, match=why):
        load_checkpoint(str(path))


def test_non_finite_or_foreign_checkpoints_are_named(trained, compose_cfg, tmp_path):
    """Eval and resume refuse NaN weights and a checkpoint of another shape, in one line."""
    from rds_act.build import build_module
    from rds_act.checkpoint import check_fits

    module, _ = build_module(compose_cfg("act=better_plsd", *TINY))
    check_fits(module, str(trained))  # the same config fits
    wider, _ = build_module(compose_cfg("act=better_plsd", *TINY, "model.d_model=64"))
    with pytest.raises(ConfigError, match=r"trained with task=rpc_small, act=better_plsd, "
                                          r"d_model=32\) does not fit this config: .* there"):
        check_fits(wider, str(trained))
    ckpt = torch.load(trained, weights_only=False)
    name = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][name] = ckpt["state_dict"][name] * float("nan")
    broken = tmp_path / "nan.ckpt"
    torch.save(ckpt, broken)
    load_checkpoint.cache_clear()
    with pytest.raises(ConfigError, match=rf"holds non-finite weights \({name}\)"):
        check_fits(module, str(broken))


def test_a_failed_checkpoint_write_keeps_the_good_one(tmp_path, monkeypatch):
    """Disk full mid-write: the earlier last.ckpt stays whole, no temp file is left behind."""
    from rds_act.checkpoint import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("override, message", [
    # rpc_small weights happen to fit parity's model but cannot read its inputs (this used to
    # stop with a size-mismatch traceback in the test pass)
    ("task=parity", "(trained with task=rpc_small) cannot evaluate this task's test split"),
    # ten million steps for the ood split, refused before one is run
    ("task.ood_T_max=10000000", "task.ood_T_max=10000000 x task.datamodule.eval_batch_size=32 needs"),
])
def test_an_evaluation_the_checkpoint_cannot_run_is_one_line(trained, tmp_path, capsys, override,
                                                             message):
    """Through rds-act-eval: one line naming why, before the test pass, and no run dir left."""
    from helpers import run_entry

    out_dir = tmp_path / "eval"
    code, _, err = run_entry("rds_act.eval", [f"ckpt_path={trained}", override,
                                              f"hydra.run.dir={out_dir}"], capsys, tmp_path)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert message in errors[0]
    assert not out_dir.exists()
