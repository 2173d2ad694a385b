"""Training and evaluation end to end: fast_dev_run per task x strategy, metrics.json, multirun, eval."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, run_cli, run_entry, run_if

from rds_act.act import PLSD
from rds_act.build import build_module, build_trainer
from rds_act.train import train

TASKS = ["rpc", "sparse_transform", "parity", "sudoku4"]
ACTS = ["fixed", "plsd"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("act", ACTS)
def test_fast_dev_run(compose_cfg, task, act):
    grid = ["task.datamodule.size=4", "task.datamodule.n_puzzles=16"] if task == "sudoku4" else []
    cfg = compose_cfg(f"task={task.removesuffix('4')}", f"act={act}", *TINY, *grid,
                      "trainer.fast_dev_run=true")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert module.samples_seen == 16  # fast_dev_run: exactly one training batch
    trainer.test(module, datamodule=datamodule, verbose=False)
    logged = trainer.callback_metrics
    assert len(module.predictions) == 32 + 32  # every test and ood sample once
    for split in ("test", "ood"):
        top = cfg.task.T_max if split == "test" else cfg.task.ood_T_max
        rows = [r for r in module.predictions if r["split"] == split]
        exits = [r["exit_step"] for r in rows]
        assert float(logged[f"{split}/avg_exit"]) == pytest.approx(sum(exits) / len(exits))
        assert all(1 <= e <= top for e in exits)
        if act == "fixed":  # never halts early: every sample thinks to the split's T_max
            assert set(exits) == {top}
        right = sum(bool(r["correct"]) for r in rows) / len(rows)
        assert float(logged[f"{split}/acc"]) == pytest.approx(right)
    if task == "sparse_transform":
        assert float(logged["test/mse"]) > 0.0


def test_train_writes_metrics_json_and_is_reproducible(compose_cfg, tmp_path):
    overrides = [*TINY, "callbacks=default", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    first = train(compose_cfg(*overrides))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for split in ("val", "test", "ood"):
        for name in ("acc", "oracle_acc", "final_acc", "avg_exit", "oracle_step", "esa", "csr",
                     "oracle_csr", "ige", "over_rate", "under_rate", "avg_required", "exit_rho"):
            assert f"{split}/{name}" in saved
    assert saved["test/avg_required"] == pytest.approx(first["test/avg_required"])
    second = train(compose_cfg(*overrides))
    assert first.keys() == second.keys()
    for key, value in first.items():  # NaN (e.g. exit_rho with constant exits) equals NaN here
        assert value == second[key] or (math.isnan(value) and math.isnan(second[key])), key
    assert_metrics_match_predictions(saved, tmp_path / "predictions.csv")


def assert_metrics_match_predictions(metrics: dict, path: Path) -> None:
    """metrics.json must be recomputable exactly from predictions.csv."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for split in ("test", "ood"):
        part = [r for r in rows if r["split"] == split]
        assert part, split
        # error and cell_acc are blank where the task has no such figure (classification, one label)
        col = {k: [float(r[k]) for r in part] for k in part[0] if k not in ("split", "error", "cell_acc")}
        assert all(r["cell_acc"] == "" for r in part) == (f"{split}/cell_acc" not in metrics)
        n = len(part)
        mean = {k: sum(v) / n for k, v in col.items()}
        steps = col["steps"][0]
        known = [(e, q) for e, q in zip(col["exit_step"], col["steps_required"], strict=True) if q > 0]
        expected = {
            "acc": mean["correct"], "oracle_acc": mean["correct_oracle"],
            "final_acc": mean["correct_final"], "loss": mean["loss"], "avg_exit": mean["exit_step"],
            "oracle_step": mean["oracle_step"], "csr": 1 - mean["exit_step"] / steps,
            "oracle_csr": 1 - mean["oracle_step"] / steps,
            "esa": sum(e == o for e, o in zip(col["exit_step"], col["oracle_step"], strict=True)) / n,
            "ige": (mean["loss_first"] - mean["loss_oracle"]) / mean["oracle_step"],
            "over_rate": sum(e > q for e, q in known) / len(known),
            "under_rate": sum(e < q for e, q in known) / len(known),
        }
        for name, value in expected.items():
            assert metrics[f"{split}/{name}"] == pytest.approx(value, rel=1e-6, abs=1e-6), name
        rho = spearman(col["difficulty"], col["exit_step"])
        if math.isnan(rho):
            assert metrics[f"{split}/exit_rho"] is None  # written as null
        else:
            assert metrics[f"{split}/exit_rho"] == pytest.approx(rho, abs=1e-5)


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson correlation of average ranks (ties share their mean rank); NaN if one is constant."""

    def ranks(v: list[float]) -> np.ndarray:
        v = np.asarray(v)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


class NaNStrategy(PLSD):
    def loss(self, stack, batch):
        loss, logs = super().loss(stack, batch)
        return loss * float("nan"), logs


def test_nan_loss_stops_with_a_clear_error(compose_cfg):
    cfg = compose_cfg(*TINY, "trainer.fast_dev_run=true")
    module, datamodule = build_module(cfg)
    module.act = NaNStrategy()
    with pytest.raises(FloatingPointError, match="non-finite training loss.*act=plsd"):
        build_trainer(cfg).fit(module, datamodule=datamodule)


@run_if(min_gpus=1)
def test_gpu_trainer_fits_and_tests(compose_cfg):
    """``trainer=gpu`` (one GPU, bf16-mixed) trains and tests end to end."""
    cfg = compose_cfg("trainer=gpu", *TINY, "trainer.max_epochs=1")
    module, datamodule = build_module(cfg)
    fitted = build_trainer(cfg)
    fitted.fit(module, datamodule=datamodule)
    fitted.test(module, datamodule=datamodule, verbose=False)
    assert 0.0 <= float(fitted.callback_metrics["test/acc"]) <= 1.0


def test_multirun_then_eval_from_checkpoint(tmp_path, capsys):
    """The issue's sweep: four jobs, each with its own dir and metrics.json; eval reproduces one."""
    args = ["-m", "task=rpc,sparse_transform", "act=fixed,plsd", "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false", *[a for a in TINY if not a.startswith("callbacks")]]
    proc = run_cli("rds_act.train", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/metrics.json"))
    assert len(jobs) == 4 and len({p.name for p in jobs}) == 4
    trained = json.loads((jobs[0] / "metrics.json").read_text())

    ckpt = jobs[0] / "checkpoints" / "last.ckpt"
    proc = run_cli("rds_act.eval", [f"ckpt_path={ckpt}", "logger=none"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evals = list(tmp_path.glob("outputs/eval/runs/*/metrics.json"))
    assert len(evals) == 1
    hydra_cfg = (evals[0].parent / ".hydra" / "config.yaml").read_text()
    assert "rds_act.act.Fixed" in hydra_cfg  # composed with the checkpoint's own act group
    evaluated = json.loads(evals[0].read_text())
    for key in ("test/acc", "test/avg_exit", "ood/esa", "ood/acc"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6)

    # overrides of keys that only the checkpoint's own act has, or a switch of halting rule
    for job, overrides in ((jobs[0], ["act.deep_supervision=true"]),
                           (jobs[1], ["act=better_plsd", "act.threshold=0.9"])):
        ckpt_job = job / "checkpoints" / "last.ckpt"
        proc = run_cli("rds_act.eval", [f"ckpt_path={ckpt_job}", "logger=none", *overrides], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]

    # a corrupt checkpoint fails in one line and leaves earlier outputs alone
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    code, _, err = run_entry("rds_act.eval", [f"ckpt_path={bad}", "logger=none"], capsys, tmp_path)
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: ckpt_path='{bad}' is not a readable checkpoint (UnpicklingError)"
    ]
    assert all(p.exists() for p in before)
    assert torch.load(ckpt, weights_only=False)["rds_act_config"]["task"]["name"] == "rpc"


def test_sigterm_leaves_an_interrupted_record_and_a_resumable_checkpoint(tmp_path):
    """A pre-empted job (SIGTERM) must not look like a success: exit 143, metrics.json with
    status interrupted; stopped in its first epoch it still leaves a last.ckpt (the state training
    started from) that resumes to exactly the metrics of a run never stopped."""
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    args = [*[a for a in TINY if not a.startswith("callbacks")], "task.datamodule.n_train=16384",
            "trainer.max_epochs=200", "trainer.enable_progress_bar=false", "test=false",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "rds_act.train", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert last.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "SIGTERM at epoch 0" in record["reason"]
    saved = torch.load(last, weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == 0  # from before the first batch
    epochs = 2
    resumed = run_cli("rds_act.train", [*args[:-1], f"trainer.max_epochs={epochs}",
                                        f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"],
                      tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert done["status"] == "completed" and done["train/samples"] == epochs * 16384
    # and it ends exactly where a run never interrupted ends
    straight = run_cli("rds_act.train", [*args[:-1], f"trainer.max_epochs={epochs}",
                                         f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    want = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    for key in ("val/acc", "val/loss", "ood/acc", "ood/avg_exit", "val/avg_exit"):
        assert done[key] == want[key], key


def test_a_sigterm_inside_a_batch_that_does_not_end_stops_the_run_after_the_grace(tmp_path):
    """Lightning honours SIGTERM at the next batch end; a batch that outlasts the grace (10 s)
    is stopped where it is, with the same record and exit, before a cluster's SIGKILL."""
    import signal
    import subprocess
    import sys
    import time

    from rds_act.interrupt import SIGTERM_GRACE_S

    run_dir, marker = tmp_path / "run", tmp_path / "in_batch"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    args = [*TINY, "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "test=false",
            "+callbacks.slow._target_=helpers.SlowBatch", f"+callbacks.slow.marker={marker}",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "rds_act.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "never in the batch"
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, proc.stderr.read()[-2000:]
    took = time.time() - sent
    assert SIGTERM_GRACE_S - 1 <= took < SIGTERM_GRACE_S + 30, took  # not at once, not at the end
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "SIGTERM at epoch 0" in record["reason"], record
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("signum, code", [
    (15, 143), pytest.param(2, 130, marks=pytest.mark.slow)])  # SIGTERM, SIGINT
def test_a_signal_in_the_test_pass_leaves_an_interrupted_record(tmp_path, signum, code):
    """Stopped after fit, while testing: exit 143 / 130 and metrics.json interrupted, naming the
    test pass (Lightning turns signals into exits inside its loops only); a resume then tests."""
    import subprocess
    import sys
    import threading

    run_dir = tmp_path / "run"
    args = [*[a for a in TINY if not a.startswith(("callbacks", "task.datamodule.n_test"))],
            "task.datamodule.n_test=20000", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "rds_act.train", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    testing = threading.Event()

    def watch() -> None:  # the test pass on the best checkpoint says so first
        for line in proc.stdout:
            if line.startswith("testing ") and "on the test and ood splits" in line:
                testing.set()

    threading.Thread(target=watch, daemon=True).start()
    assert testing.wait(timeout=300), "the test pass never started"
    proc.send_signal(signum)
    assert proc.wait(timeout=300) == code
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "in the test pass" in record["reason"], record
    assert not (run_dir / "predictions.csv").exists()
    if signum == 15:  # resuming a stopped run: test_sigterm_leaves_... (and the slow case here)
        return
    resumed = run_cli("rds_act.train", [*args[:-1], "task.datamodule.n_test=32", f"hydra.run.dir={run_dir}",
                                        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = json.loads((run_dir / "metrics.json").read_text())
    assert done["status"] == "completed" and "test/acc" in done


def test_a_sigterm_during_rds_act_eval_leaves_an_interrupted_record(tmp_path):
    """rds-act-eval stopped in its test pass: exit 143 and metrics.json interrupted, naming the
    phase (it once died by the signal's default action, and a later stop left "completed")."""
    import select
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    trained = run_cli("rds_act.train", [*TINY, "callbacks=default", "trainer.enable_progress_bar=false",
                                        "trainer.max_epochs=1", f"hydra.run.dir={run}"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = tmp_path / "eval"
    proc = subprocess.Popen(  # one sample a batch: a test pass of seconds, long enough to land in
        [sys.executable, "-m", "rds_act.eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
         "task.datamodule.n_test=4000", "task.datamodule.eval_batch_size=1", f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, deadline = b"", time.time() + 300
    while b"testing " not in seen and proc.poll() is None and time.time() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            seen += os.read(proc.stdout.fileno(), 1 << 16)
    assert b"testing " in seen, seen[-2000:]
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    seen += proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, seen[-2000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["reason"] == "SIGTERM in the test pass", record
    assert b"Traceback" not in seen


def test_an_error_chain_that_loops_back_ends_the_search():
    """Exception chains can be cycles (an error raised while handling its own cause); the search
    for a full disk or bad input in one must end (it once spun forever on a Sudoku config error)."""
    import errno

    from rds_act.errors import disk_full

    a, b = ValueError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert disk_full(a) is None
    full = OSError(errno.ENOSPC, "No space left on device")
    b.__context__ = full
    assert disk_full(a) is full


def test_a_full_disk_is_one_line_a_failed_record_and_never_the_earlier_success(tmp_path, capsys,
                                                                              monkeypatch):
    """The disk fills while a resumed run saves its checkpoint (here: the save raises ENOSPC, as a
    full tmpfs did by hand): one error line, exit 2, no traceback; metrics.json says failed, and
    the earlier attempt's "completed" record was moved aside, not left to speak for this one."""
    import errno

    from lightning.pytorch.plugins.io.torch_plugin import TorchCheckpointIO

    run = tmp_path / "run"
    args = [*TINY, "callbacks=default", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]
    code, _, err = run_entry("rds_act.train", [*args, "trainer.max_epochs=1"], capsys, tmp_path)
    assert code == 0, err[-2000:]

    def full(self, checkpoint, path, storage_options=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    resume = [*args, "trainer.max_epochs=2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    code, _, err = run_entry("rds_act.train", resume, capsys, tmp_path)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert f"no space left on the device under '{run}'" in errors[0]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "failed" and "no space left" in record["reason"]
    assert "at epoch 1" in record["reason"]
    earlier = json.loads((run / ".hydra" / "attempt-1" / "metrics.json").read_text())
    assert earlier["status"] == "completed"


def test_a_diverging_run_exits_2_with_a_failed_record(tmp_path):
    """As a user meets it: a learning rate that blows the weights up stops the run in one line,
    exit 2, and metrics.json says failed (never a success with NaN metrics)."""
    args = [*TINY, "optimizer.lr=1e30", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli("rds_act.train", args, tmp_path)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "non-finite training loss" in errors[0]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "non-finite" in record["reason"]
    assert not any(k.startswith("test/") for k in record)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    """Stopped after epoch 2 and resumed in place to epoch 4, a run ends with exactly the metrics
    of one run straight to epoch 4 (CPU, same seed): same batches, same order, same curriculum;
    the first attempt's overrides are kept beside the second's."""
    base = [*[a for a in TINY if not a.startswith("callbacks")], "task.datamodule.n_train=256",
            "trainer.enable_progress_bar=false",
            "task.datamodule.curriculum={start: 2, step: 1, threshold: 0.0}"]
    straight = run_cli("rds_act.train", [*base, "trainer.max_epochs=4",
                                         f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    part = tmp_path / "part"
    first = run_cli("rds_act.train", [*base, "trainer.max_epochs=2", f"hydra.run.dir={part}"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_cli("rds_act.train", [*base, "trainer.max_epochs=4", f"hydra.run.dir={part}",
                                        f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    got = json.loads((part / "metrics.json").read_text())
    assert got["train/samples"] == want["train/samples"] == 4 * 256
    for key in want:
        if key.startswith(("val/", "test/", "ood/", "curriculum/")):
            assert got[key] == want[key] or (math.isnan(got[key]) and math.isnan(want[key])), key
    earlier = list((part / ".hydra").glob("attempt-*/overrides.yaml"))
    assert len(earlier) == 1 and "trainer.max_epochs=2" in earlier[0].read_text()
    assert "ckpt_path=" in (part / ".hydra" / "overrides.yaml").read_text()


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """trainer=ddp with 2 CPU processes: one run dir, one metrics.json, one complete
    predictions.csv (every test and ood sample once), each process trained on half of each
    epoch, and test metrics equal to a single-process evaluation of the same checkpoint."""
    run_dir = tmp_path / "run"
    args = [*[a for a in TINY if not a.startswith("callbacks")], "task.datamodule.n_test=33",
            "task.datamodule.n_ood=33", "task.datamodule.eval_batch_size=8", "trainer=ddp",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    proc = run_cli("rds_act.train", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no second run dir from process 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/samples"] == 2 * 64  # two epochs of 64, half on each process
    with (run_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    for split in ("test", "ood"):
        assert sorted(int(r["index"]) for r in rows if r["split"] == split) == list(range(33))
    assert_metrics_match_predictions(metrics, run_dir / "predictions.csv")
    best = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"))
    single = run_cli("rds_act.eval", [f"ckpt_path={best[-1]}", "logger=none",
                                      f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("test/acc", "test/avg_exit", "test/loss", "ood/acc", "ood/avg_exit", "ood/esa"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
