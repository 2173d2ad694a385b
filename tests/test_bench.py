"""scripts/bench_throughput.py: one row per batch size, shares that add up, the best named;
scripts/bench_datagen.py times both generators of a split;
scripts/probe_inputs.py counts the cases it runs;
scripts/bench_learning.py times both readings of accuracy, each threshold once;
scripts/gpu_check.sh refuses a machine without a GPU before it writes anything."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_script

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_throughput.py"


def test_throughput_table_has_a_row_per_batch_size_and_names_the_best(capsys):
    code, out, err = run_script(SCRIPT, ["batch_sizes=8,16", "model.d_model=32"], capsys)
    assert code == 0, err[-2000:]
    rows = [ln.split() for ln in out.splitlines() if re.match(r"^\s*\d+\s", ln)]
    assert [int(r[0]) for r in rows] == [8, 16]
    for r in rows:
        samples, applications = float(r[1]), float(r[2])
        assert applications == pytest.approx(samples * 4, rel=0.01, abs=2)  # rpc_small: 4 steps
        shares = [int(v.rstrip("%")) for v in r[3:6]]
        assert 98 <= sum(shares) <= 102, r  # data + fwd/bwd/opt + framework, rounded
    best = re.search(r"best batch size: (\d+) \((\d+) samples/s", out)
    fastest = max(rows, key=lambda r: float(r[1]))
    assert best and best.group(1) == fastest[0] and best.group(2) == f"{float(fastest[1]):.0f}"


def test_datagen_bench_times_both_generators_and_their_ratio(capsys):
    script = SCRIPT.parent / "bench_datagen.py"
    code, out, err = run_script(script, ["task=parity", "n=64", "repeats=1"], capsys)
    assert code == 0, err[-2000:]
    assert out.startswith("parity: 64 training samples, best of 1"), out
    slow = float(re.search(r"batched=false\): ([\d.]+) s", out).group(1))
    fast, ratio = map(float, re.search(r"batched=true\): +([\d.]+) s +\(([\d.]+)x", out).groups())
    assert slow > 0 and fast > 0
    assert ratio == pytest.approx(slow / fast, rel=0.2, abs=0.2)  # the printed times are rounded


def test_time_to_accuracy_reads_accuracy_at_the_exit_and_with_every_step_run(
    capsys, tmp_path, monkeypatch
):
    """Both readings get a line per threshold; a reached threshold's samples lie within the run
    and grow with the threshold (parity on 8 entries: chance is 0.5, so 0.5 is met early); the
    script writes nothing where it runs (no checkpoints, no logs)."""
    script = SCRIPT.parent / "bench_learning.py"
    monkeypatch.chdir(tmp_path)
    code, out, err = run_script(script, [
        "task=parity", "task.datamodule.dim=8", "task.datamodule.max_nonzero=8",
        "task.datamodule.ood_min_nonzero=1", "task.datamodule.ood_max_nonzero=8",
        "task.encoder.chunk=1", "task.datamodule.curriculum=null", "task.datamodule.n_train=256",
        "task.datamodule.prefetch=false", "model.d_model=16", "trainer.max_epochs=3"], capsys)
    assert code == 0, err[-2000:]
    total = int(re.search(r"after ([\d,]+) samples", out).group(1).replace(",", ""))
    assert total == 3 * 256
    for reading in ("at exit", "all steps"):
        lines = [ln for ln in out.splitlines() if ln.startswith(reading)]
        assert [float(re.search(r"acc >= ([\d.]+)", ln).group(1)) for ln in lines] == [
            0.5, 0.9, 0.95, 0.99], out
        reached = [int(m.group(1).replace(",", "")) for ln in lines
                   if (m := re.search(r": +([\d,]+) samples", ln))]
        assert reached and reached == sorted(reached) and all(0 < s <= total for s in reached), out
    assert not list(tmp_path.iterdir())
    assert "reached: at exit    acc >= 0.5 " in err  # each record said as it is reached


def test_the_gpu_check_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    script = SCRIPT.parent / "gpu_check.sh"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: this python's torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES=); this script needs one"]
    assert not (tmp_path / "out").exists()


def test_the_case_recount_runs_a_case_and_counts_it():
    """scripts/probe_inputs.py: the named case through the entry point, judged and counted (its
    finished run trained first); a case that does not hold makes the script exit 1."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "probe_inputs.py"
    proc = subprocess.run([sys.executable, str(script), "only=seed=abc"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"^held .*seed=abc \| exit 2 .*error: seed='abc'", proc.stdout, re.M), proc.stdout
    assert "1 cases: 1 held, 0 failed, 0 not run" in proc.stdout
