"""rds-act-report: summary.csv / summary.md / PNG plots from fake run dirs, and the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from rds_act.errors import ConfigError
from rds_act.report import positional_to_override, write_report
from rds_act.results import PREDICTION_COLUMNS
from rds_act.runs import find_run_dirs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(run_dir: Path, overrides: list[str], metrics: dict, predictions: bool = True,
             act_target: str = "rds_act.act.PLSD", curve: bool = False,
             choices: dict | None = None) -> Path:
    """A run dir shaped like rds-act-train's: metrics.json, .hydra/*.yaml, predictions.csv and,
    with ``curve``, a Lightning csv/metrics.csv with val/acc and train/samples per epoch."""
    (run_dir / ".hydra").mkdir(parents=True)
    if choices is not None:
        (run_dir / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if curve:
        (run_dir / "csv").mkdir()
        rows = ["epoch,step,train/loss,train/samples,val/acc"]
        for epoch in range(5):
            rows.append(f"{epoch},{epoch * 10},0.5,,")  # a training row: no val/acc
            rows.append(f"{epoch},{epoch * 10},,{(epoch + 1) * 8000},{0.1 + 0.2 * epoch}")
        (run_dir / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"run_kind": "train", "seed": 0, "task": {"name": "rpc"},
              "act": {"_target_": act_target}, "model": {"T_max": 8}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if predictions:
        rows = []
        for i in range(40):
            req = 1 + i % 8
            common = {"index": i, "oracle_step": req, "difficulty": req, "loss": 0.1,
                      "loss_first": 0.5, "loss_oracle": 0.1, "error": ""}
            rows.append({**common, "split": "test", "exit_step": min(8, req + i % 2),
                         "steps_required": req, "correct": 1, "correct_oracle": 1,
                         "correct_final": 1, "steps": 8})
            rows.append({**common, "split": "ood", "exit_step": 8, "steps_required": req + 2,
                         "correct": 0, "correct_oracle": 0, "correct_final": 0, "steps": 12})
        with (run_dir / "predictions.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PREDICTION_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return run_dir


def metrics(acc: float, avg_exit: float) -> dict:
    return {"test/acc": acc, "test/avg_exit": avg_exit, "test/esa": 0.5, "test/csr": None,
            "ood/acc": acc / 2, "ood/avg_exit": 12.0, "val/acc": acc}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """multirun-like tree: 2 strategies x 2 seeds, plus better_plsd over 2 λ x 2 seeds."""
    root = tmp_path / "multirun" / "2026-01-01_00-00-00_000000"
    accs = {"fixed": (0.5, 0.7), "plsd": (0.8, 0.9)}
    n = 0
    for act, pair in accs.items():
        for seed, acc in enumerate(pair):
            make_run(root / str(n), [f"act={act}", f"seed={seed}"], metrics(acc, 8.0 - 2 * seed),
                     curve=True)
            n += 1
    for lam in (0.3, 0.7):
        for seed in (0, 1):
            make_run(root / str(n), ["act=better_plsd", f"act.threshold={lam}", f"seed={seed}"],
                     metrics(0.6 + lam / 4, 2 + 4 * lam + seed / 10))
            n += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_summary_csv_has_one_row_per_run(sweep: Path, tmp_path: Path) -> None:
    result = write_report([sweep], tmp_path / "out")
    with result["summary_csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert {"run", "task", "act", "seed", "act.threshold", "test/acc", "ood/avg_exit"} <= set(rows[0])
    assert {r["act"] for r in rows} == {"fixed", "plsd", "better_plsd"}
    assert {r["task"] for r in rows} == {"rpc"}  # filled from config.yaml's task.name
    assert rows[0]["test/csr"] == ""  # null metric stays empty


def test_summary_md_mean_std_over_seeds(sweep: Path, tmp_path: Path) -> None:
    result = write_report([sweep], tmp_path / "out")
    table = result["summary_md"].read_text()
    header = table.splitlines()[0]
    assert "| n |" in header and "test/acc" in header and "act.threshold" in header and "seed" not in header
    fixed = next(line for line in table.splitlines() if "| fixed |" in line)
    assert "0.600 ± 0.141" in fixed and "| 2 | 0 |" in fixed  # n, failed
    # the 95 % interval of the mean over 2 seeds: 0.6 ± 12.706 x 0.141 / sqrt(2)
    assert "0.600 ± 0.141 [-0.671, 1.871]" in fixed
    assert len(result["groups"]) == 4  # fixed, plsd, better_plsd x 2 λ


def test_runs_that_did_not_complete_are_listed_apart(sweep: Path, tmp_path: Path) -> None:
    """An interrupted or diverged run is never averaged in: it is named below the table."""
    before = write_report([sweep], tmp_path / "before")["table"]
    make_run(sweep / "nan", ["act=plsd", "seed=7"],
             {"status": "failed", "reason": "non-finite training loss", **metrics(0.0, 8.0)})
    result = write_report([sweep], tmp_path / "out")
    rows = lambda t: [ln for ln in t.splitlines() if ln.startswith("| ")]  # noqa: E731
    assert len(rows(result["table"])) == len(rows(before))
    for old, new in zip(rows(before), rows(result["table"]), strict=True):
        if "| plsd |" in old:  # counted in its group's failed column, not averaged in
            assert new.replace("| 2 | 1 |", "| 2 | 0 |") == old
        else:
            assert new == old  # same rows, same means
    assert f"- {sweep / 'nan'}: failed" in result["table"]
    with result["summary_csv"].open() as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows[str(sweep / "nan")]["status"] == "failed" and len(rows) == 9
    with pytest.raises(ConfigError, match="no completed runs among 1 found"):
        write_report([sweep / "nan"], tmp_path / "none")


def test_every_png_is_written(sweep: Path, tmp_path: Path) -> None:
    result = write_report([sweep], tmp_path / "out")
    assert list(result["skipped"]) == ["expert_usage.png"]  # no run has an expert library
    for name in ("pareto.png", "exit_hist.png", "complexity_vs_oracle.png", "threshold_sweep.png",
                 "learning_curve.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_missing_predictions_skip_histograms(tmp_path: Path) -> None:
    for seed in (0, 1):
        make_run(tmp_path / "runs" / str(seed), ["act=plsd", f"seed={seed}"], metrics(0.5, 4.0),
                 predictions=False)
    result = write_report([tmp_path / "runs"], tmp_path / "out")
    assert set(result["skipped"]) == {"exit_hist.png", "complexity_vs_oracle.png", "threshold_sweep.png",
                                      "learning_curve.png", "expert_usage.png"}
    assert "val/acc" in result["skipped"]["learning_curve.png"]
    assert (tmp_path / "out" / "pareto.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "out" / "exit_hist.png").exists()


def test_learning_curve_reads_val_acc_against_samples(tmp_path: Path) -> None:
    from rds_act.plots import read_curve

    run = make_run(tmp_path / "run", ["act=plsd"], metrics(0.5, 4.0), curve=True)
    x, y, x_name, y_name = read_curve(run)
    assert x.tolist() == [8000, 16000, 24000, 32000, 40000]
    assert (x_name, y_name) == ("train/samples", "val/acc")
    assert y.tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


def test_expert_usage_reads_the_last_validation_per_step_and_expert(tmp_path: Path) -> None:
    from rds_act.plots import read_expert_usage

    run = make_run(tmp_path / "run", ["model=dyntrm_moe"], metrics(0.5, 4.0))
    keys = [f"val_curve/expert_usage_t{t:02d}_e{e}" for t in (1, 2) for e in (0, 1)]
    lines = ["epoch," + ",".join(keys), "0,0.5,0.5,0.5,0.5", "1,0.9,0.1,0.2,0.8", "1,,,,"]
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert read_expert_usage(run).tolist() == [[0.9, 0.1], [0.2, 0.8]]  # step x expert, last epoch
    result = write_report([run], tmp_path / "out")
    assert "expert_usage.png" not in result["skipped"]
    assert (tmp_path / "out" / "expert_usage.png").read_bytes().startswith(PNG_MAGIC)


def test_runs_of_one_act_share_its_colour_and_differ_in_line_style(tmp_path, monkeypatch):
    from rds_act import plots
    from rds_act.runs import group_runs, load_run

    runs = [load_run(make_run(tmp_path / str(i), ["act=plsd", f"optimizer.lr={lr}"],
                              metrics(0.5, 4.0), curve=True)) for i, lr in enumerate((1e-3, 2e-3))]
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    plots.learning_curve(group_runs(runs, ("task", "act")), tmp_path / "curve.png")
    lines = drawn["fig"].axes[0].get_lines()
    assert len({ln.get_color() for ln in lines}) == 1
    assert len({ln.get_linestyle() for ln in lines}) == 2
    # sample counts read as 250k / 1.5M, not digits run together with the next tick
    tick = drawn["fig"].axes[0].xaxis.get_major_formatter()
    assert [tick(v, 0) for v in (0, 500, 250_000, 1_500_000)] == ["0", "500", "250k", "1.5M"]


def test_labels_name_only_what_differs_between_runs(tmp_path: Path) -> None:
    """One run named model/optimizer on its command line, the other took them as defaults: the
    labels must still differ only in act (the old report showed 'model=dyntrm, optimizer=...')."""
    from rds_act.plots import _varying

    choices = {"task": "rpc", "model": "dyntrm", "optimizer": "adamw", "act": "plsd"}
    make_run(tmp_path / "runs" / "a", ["act=plsd", "model=dyntrm", "optimizer=adamw"],
             metrics(0.5, 4.0), choices=choices)
    make_run(tmp_path / "runs" / "b", ["act=fixed"], metrics(0.7, 8.0),
             choices={**choices, "act": "fixed"})
    result = write_report([tmp_path / "runs"], tmp_path / "out")
    assert _varying(result["groups"]) == ["act"]
    assert "run_kind" not in result["table"] and "model" not in result["table"]


def test_a_run_from_before_a_group_existed_counts_as_its_default(tmp_path: Path) -> None:
    """Seed 0 ran before the training group existed (no choice recorded), seed 1 after
    (training=unroll, the default): one group of two seeds, not two groups of one."""
    choices = {"task": "parity", "model": "dyntrm", "act": "ponder"}
    make_run(tmp_path / "runs" / "s0", ["act=ponder", "seed=0"], metrics(0.5, 4.0), choices=choices)
    make_run(tmp_path / "runs" / "s1", ["act=ponder", "seed=1"], metrics(0.7, 5.0),
             choices={**choices, "training": "unroll"})
    make_run(tmp_path / "runs" / "ds", ["act=ponder", "seed=0"], metrics(0.1, 5.0),
             choices={**choices, "training": "deep_supervision"})
    groups = write_report([tmp_path / "runs"], tmp_path / "out")["groups"]
    assert sorted(len(g.runs) for g in groups) == [1, 2]


def test_each_strategy_keeps_its_colour():
    from rds_act.plots import act_color

    assert act_color("plsd") == act_color("plsd") != act_color("better_plsd")
    assert len({act_color(a) for a in ("fixed", "qlearning", "plsd", "better_plsd", "overthink",
                                         "ponder", "act_graves")}) == 7


def test_labels_fall_back_to_hydra_choices(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", [], metrics(0.5, 4.0), act_target="rds_act.act.BetterPLSD")
    result = write_report([run], tmp_path / "out")
    assert result["runs"][0].labels == {"task": "rpc", "act": "betterplsd", "seed": "0", "run_kind": "train"}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"task": "rpc", "act": "better_plsd"}}}}))
    assert write_report([run], tmp_path / "out2")["runs"][0].labels["act"] == "better_plsd"


def test_eval_run_is_labelled_from_its_checkpoint_run(tmp_path: Path) -> None:
    train = make_run(tmp_path / "train", ["act=plsd", "seed=3"], metrics(0.5, 4.0))
    ckpt = train / "checkpoints" / "last.ckpt"
    evaluated = make_run(tmp_path / "eval", [f"ckpt_path={ckpt}", "act.threshold=0.9"], metrics(0.6, 3.0))
    config = yaml.safe_load((evaluated / ".hydra" / "config.yaml").read_text())
    (evaluated / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "run_kind": "eval"}))
    labels = write_report([evaluated], tmp_path / "out")["runs"][0].labels
    assert labels["act"] == "plsd" and labels["seed"] == "3" and labels["act.threshold"] == "0.9"
    assert labels["run_kind"] == "eval"


def test_bad_inputs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no inputs"):
        find_run_dirs([])
    with pytest.raises(ConfigError, match="nope"):
        find_run_dirs([tmp_path / "nope"])
    with pytest.raises(ConfigError, match="no run dirs"):
        find_run_dirs([tmp_path])


def test_positional_paths_become_inputs_override() -> None:
    assert positional_to_override(["multirun/a", "group_by=[act]", "b/c"]) == [
        "group_by=[act]", "inputs=['multirun/a','b/c']"]
    assert positional_to_override(["inputs=[a]", "-cn", "report"]) == ["inputs=[a]", "-cn", "report"]
    with pytest.raises(ConfigError, match="not both"):
        positional_to_override(["a", "inputs=[b]"])


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli("rds_act.report", list(args), cwd)


def test_cli_positional_path(sweep: Path, tmp_path: Path) -> None:
    proc = report_cli(str(sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out_dirs = list((tmp_path / "outputs" / "report").iterdir())
    assert len(out_dirs) == 1
    assert {"summary.csv", "summary.md", "pareto.png"} <= {p.name for p in out_dirs[0].iterdir()}
    assert "0.600 ± 0.141" in proc.stdout and str(out_dirs[0].name) in proc.stdout


def test_cli_without_inputs_fails_in_one_line(tmp_path: Path) -> None:
    proc = report_cli(cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no inputs")
