"""A non-editable install (pip install ., a cluster node's site-packages) finds its configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_ships_every_config(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w",
                    str(tmp_path)], check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("rds_act-*.whl"))
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("rds_act/conf/")}
    expected = {f"rds_act/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert expected and expected == shipped
