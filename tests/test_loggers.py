"""The CSV history of a run survives a resume in the same run dir."""

from __future__ import annotations

import csv

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
