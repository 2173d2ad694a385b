"""scripts/bench_throughput.py: one row per batch size, shares that add up, the best named."""

from __future__ import annotations

import re
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
