"""``init_from=<ckpt>``: a new run that starts from a trained run's weights (a fine-tune, a new
schedule, another strategy), counted on from that run's samples; bad or mismatched checkpoints are
one line before anything trains."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, run_cli, run_entry

from rds_act.checkpoint import init_weights, load_checkpoint

BASE = [*(a for a in TINY if not a.startswith("callbacks")), "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "test=false"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One epoch of plsd on rpc_small (64 samples); its last checkpoint (shared: read only)."""
    root = tmp_path_factory.mktemp("first")
    proc = run_cli("rds_act.train", [*BASE, f"hydra.run.dir={root / 'a'}"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "a" / "checkpoints" / "last.ckpt"


def test_a_warm_start_trains_a_new_run_from_the_weights(first, tmp_path, compose_cfg):
    """From the shell: another strategy and a schedule on the first run's weights; the new run's
    samples count on from the first's, and its metrics.json says where it started."""
    run = tmp_path / "b"
    proc = run_cli("rds_act.train", [*BASE, "act=fixed", "scheduler=warmup_cosine",
                                     f"init_from={first}", f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["init/samples"] == 64 and record["train/samples"] == 128
    assert not (run / ".hydra" / "attempt-1").exists()  # a new run, not a resume in place
    # the weights it started from are the checkpoint's, not a fresh init
    from rds_act.build import build_module

    module, _ = build_module(compose_cfg(*TINY, "act=fixed"))
    fresh = {k: v.clone() for k, v in module.state_dict().items()}
    assert init_weights(module, str(first)) == 64
    saved = load_checkpoint(str(first))["state_dict"]
    assert all(torch.equal(module.state_dict()[k], saved[k]) for k in saved)
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved)


@pytest.mark.parametrize("extra, message", [
    (["init_from=nowhere.ckpt"], "init_from='nowhere.ckpt' is not an existing file"),
    (["init_from="], "init_from='' is empty; allowed: a path to a checkpoint, or null"),  # $CKPT unset
    (["ckpt_path="], "ckpt_path='' is empty; allowed: a path to a checkpoint, last, or null"),
    (["init_from={ckpt}", "model.d_model=16"], "init_from='{ckpt}' (trained with task=rpc_small, "
                                               "act=plsd, d_model=32) does not fit this config"),
    (["init_from={ckpt}", "ckpt_path={ckpt}"], "a resume continues that run, which started from "
                                               "init_from=None"),
])
def test_a_bad_init_from_is_one_line_and_trains_nothing(first, tmp_path, capsys, extra, message):
    run = tmp_path / "c"
    args = [*BASE, *(e.format(ckpt=first) for e in extra), f"hydra.run.dir={run}"]
    code, _, err = run_entry("rds_act.train", args, capsys, tmp_path)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert message.format(ckpt=first) in errors[0]
    assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()
