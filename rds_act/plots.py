"""The report's PNG figures (matplotlib, Agg): each answers one question about a sweep.

- ``pareto.png``: what accuracy does each strategy buy per average step spent?
- ``exit_hist.png``: does the exit step follow the number of steps a sample really needs?
- ``complexity_vs_oracle.png``: does the oracle step t* track the task's true step count?
- ``threshold_sweep.png``: how do accuracy and compute move with a swept halting threshold?
- ``learning_curve.png``: how fast does each run learn (validation accuracy vs training samples)?
- ``expert_usage.png``: which experts of the library does each recursive step use (model=dyntrm_moe)?

Every run is labelled by the overrides that differ between the runs drawn, and each strategy
(``act``) keeps one colour in every figure.

A figure whose data is missing is skipped with a reason, never drawn empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from rds_act.results import Predictions, read_history, read_predictions  # noqa: E402
from rds_act.runs import Group  # noqa: E402

MAX_PANELS = 6  # strategies drawn side by side in exit_hist.png
MAX_POINTS = 3000  # per strategy in the scatter, so the figure stays readable
SWEEP_SUFFIXES = ("threshold", "margin")
# what each swept threshold measures (an exit rule's own unit for eval.threshold)
THRESHOLD_UNITS = {"act.threshold": "halting probability", "act.margin": "Q-halt logit margin",
                   "eval.threshold": "the exit rule's own unit"}


class SkipPlot(Exception):
    """The data a figure needs is not there; the message says what is missing."""


def _varying(groups: Sequence[Group], skip: Sequence[str] = ()) -> list[str]:
    keys = groups[0].key if groups else {}
    return [k for k in keys if k not in skip and len({g.key[k] for g in groups}) > 1]


def _describe(group: Group, keys: Sequence[str], default: str = "") -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={group.key[k]}" for k in keys if group.key[k]) or default


ACT_ORDER = ("fixed", "qlearning", "plsd", "better_plsd", "overthink", "ponder", "act_graves")


def act_color(act: str) -> str:
    """One colour per strategy, the same in every figure and every report."""
    if act in ACT_ORDER:
        return f"C{ACT_ORDER.index(act)}"
    return f"C{(len(ACT_ORDER) + sum(map(ord, act))) % 10}"


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: act_color(n) for n in names}


def _save(fig: plt.Figure, path: Path) -> None:
    """Tight bounding box: labels and legends outside the axes stay inside the image."""
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _mean_err(values: np.ndarray) -> tuple[float, float | None]:
    if len(values) == 0:
        return float("nan"), None
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def pareto(groups: Sequence[Group], path: Path) -> None:
    """Test accuracy against test average exit step: one subplot per task, one colour per act.

    Regression tasks (runs reporting ``test/mse``) plot MSE instead: their ``acc`` is a strict
    all-coordinates-within-tolerance rate that sits near 0 until a model is very good.
    """
    pts = [g for g in groups if len(g.values("test/acc")) and len(g.values("test/avg_exit"))]
    if not pts:
        raise SkipPlot("no run has both test/acc and test/avg_exit")
    tasks = list(dict.fromkeys(g.key.get("task", "") for g in pts))
    acts = list(dict.fromkeys(g.key.get("act", "") for g in pts))
    colors, extra = _colors(acts), _varying(pts, skip=("task", "act"))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        in_task = [g for g in pts if g.key.get("task", "") == task]
        metric = "test/mse" if any(len(g.values("test/mse")) for g in in_task) else "test/acc"
        for g in in_task:
            act = g.key.get("act", "")
            (x, xerr), (y, yerr) = _mean_err(g.values("test/avg_exit")), _mean_err(g.values(metric))
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colors[act], capsize=3, label=act)
            if extra:
                ax.annotate(_describe(g, extra), (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), title="act", fontsize=8)
        ylabel = "test MSE (lower is better)" if metric == "test/mse" else "test accuracy"
        ax.set(xlabel="test average exit step", ylabel=ylabel, title=f"task={task or '?'}")
    fig.suptitle("Accuracy vs compute (mean over seeds, bars = std)")
    fig.tight_layout()
    _save(fig, path)


def exit_hist(groups: Sequence[Group], preds: dict[Path, Predictions | None], path: Path) -> None:
    """Per strategy: the exit-step histogram of each group over the steps_required histogram."""
    acts = [a for a in dict.fromkeys(g.key.get("act", "") for g in groups)
            if any(preds.get(r.path) for g in groups if g.key.get("act", "") == a for r in g.runs)]
    if not acts:
        raise SkipPlot("no run has a predictions.csv with test rows")
    acts = acts[:MAX_PANELS]
    extra = _varying(groups, skip=("act",))
    top = max(p["exit_step"].max() for p in preds.values() if p)
    bins = np.arange(0.5, max(top, max(p["steps_required"].max() for p in preds.values() if p)) + 1.5)
    fig, axes = plt.subplots(1, len(acts), figsize=(4.5 * len(acts), 3.6), squeeze=False)
    for ax, act in zip(axes[0], acts, strict=True):
        required = []
        for g in (g for g in groups if g.key.get("act", "") == act):
            runs = [preds[r.path] for r in g.runs if preds.get(r.path)]
            if runs:
                exits = np.concatenate([p["exit_step"] for p in runs])
                ax.hist(exits, bins, density=True, alpha=0.45, color=act_color(act) if not extra else None,
                        label=f"exit: {_describe(g, extra, 'all')}")
                required += [p["steps_required"] for p in runs]
        req = np.concatenate(required)
        if (req > 0).any():
            ax.hist(req[req > 0], bins, density=True, histtype="step", color="black", linestyle="--",
                    linewidth=1.5, label="steps required")
        ax.set(xlabel="step", ylabel="fraction of test samples", title=f"act={act}")
        ax.legend(fontsize=7)
    fig.suptitle("Exit step vs steps required (test split)")
    fig.tight_layout()
    _save(fig, path)


def complexity_vs_oracle(groups: Sequence[Group], preds: dict[Path, Predictions | None], path: Path) -> None:
    """Jittered scatter of the true step count against the oracle step t*, one colour per act."""
    by_act: dict[tuple[str, str], list[Predictions]] = {}
    for g in groups:
        for r in g.runs:
            p = preds.get(r.path)
            if p and (p["steps_required"] > 0).any():
                by_act.setdefault((g.key.get("task", ""), g.key.get("act", "")), []).append(p)
    if not by_act:
        raise SkipPlot("no predictions.csv with known steps_required (test split)")
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    colors = _colors(list(dict.fromkeys(act for _, act in by_act)))
    markers = dict(zip(dict.fromkeys(task for task, _ in by_act), "os^Dv<>", strict=False))
    hi = 1.0
    for (task, act), runs in by_act.items():
        req = np.concatenate([p["steps_required"] for p in runs])
        oracle = np.concatenate([p["oracle_step"] for p in runs])
        keep = np.flatnonzero(req > 0)
        keep = rng.choice(keep, MAX_POINTS, replace=False) if len(keep) > MAX_POINTS else keep
        jitter = rng.uniform(-0.2, 0.2, size=(2, len(keep)))
        label = f"{task}: {act}" if len(markers) > 1 else act
        ax.scatter(req[keep] + jitter[0], oracle[keep] + jitter[1], s=6, alpha=0.4, color=colors[act],
                   marker=markers.get(task, "o"), label=label)
        hi = max(hi, req[keep].max(), oracle[keep].max())
    ax.plot([0.5, hi + 0.5], [0.5, hi + 0.5], "--", color="gray", label="t* = required")
    ax.set(xlabel="steps required (task)", ylabel="oracle step t*",
           title="Oracle step vs true complexity (test)")
    ax.legend(title="act", fontsize=8, markerscale=2)
    fig.tight_layout()
    _save(fig, path)


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def threshold_sweep(groups: Sequence[Group], path: Path) -> None:
    """Test accuracy and average exit step against a swept ``*.threshold`` / ``*.margin`` override."""
    keys = [k for k in _varying(groups) if k.rsplit(".", 1)[-1] in SWEEP_SUFFIXES
            and len({_as_float(g.key[k]) for g in groups} - {None}) > 1]
    if not keys:
        raise SkipPlot("no runs differ in a *.threshold or *.margin override")
    fig, (ax_acc, ax_exit) = plt.subplots(1, 2, figsize=(10, 4))
    for key in keys:
        rest = _varying(groups, skip=(key,))
        lines: dict[str, list[tuple[float, Group]]] = {}
        for g in groups:
            level = _as_float(g.key[key])
            if level is not None and len(g.values("test/acc")):
                lines.setdefault(_describe(g, rest, "runs"), []).append((level, g))
        for label, pts in lines.items():
            pts.sort(key=lambda t: t[0])
            xs = [level for level, _ in pts]
            for ax, metric in ((ax_acc, "test/acc"), (ax_exit, "test/avg_exit")):
                stats = [_mean_err(g.values(metric)) for _, g in pts]
                err = [e or 0.0 for _, e in stats]
                ax.errorbar(xs, [m for m, _ in stats], yerr=err, fmt="-o", capsize=3,
                            label=f"{label} ({key})" if len(keys) > 1 else label)
    xlabel = ", ".join(f"{k} ({THRESHOLD_UNITS.get(k, 'threshold')})" for k in keys)
    ax_acc.set(xlabel=xlabel, ylabel="test accuracy", title="Accuracy vs threshold")
    ax_exit.set(xlabel=xlabel, ylabel="test average exit step", title="Compute vs threshold")
    for ax in (ax_acc, ax_exit):
        ax.legend(fontsize=8)
    fig.suptitle("Halting threshold sweep (mean over seeds, bars = std)")
    fig.tight_layout()
    _save(fig, path)


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str, str] | None:
    """(x, y, x name, y name) from a run's csv/metrics.csv: validation accuracy (or MSE) against
    training samples (against epochs for runs that did not log ``train/samples``)."""
    rows = read_history(run_dir)
    if not rows:
        return None
    y_key = "val/acc" if "val/acc" in rows[0] else "val/mse" if "val/mse" in rows[0] else None
    if y_key is None:
        return None
    x_key = "train/samples" if "train/samples" in rows[0] else "epoch"
    points = [(float(r[x_key]), float(r[y_key])) for r in rows if r.get(y_key) and r.get(x_key)]
    if not points:
        return None
    x, y = np.array(points).T
    return x, y, x_key, y_key


def learning_curve(groups: Sequence[Group], path: Path) -> None:
    """Validation accuracy against training samples, one line per run, one colour per act."""
    curves = [(g, r, read_curve(r.path)) for g in groups for r in g.runs]
    curves = [(g, r, c) for g, r, c in curves if c is not None]
    if not curves:
        raise SkipPlot("no run has a csv/metrics.csv with val/acc (or val/mse)")
    extra = _varying(groups, skip=("act",))
    seeds = len({r.labels.get("seed") for _, r, _ in curves}) > 1
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    styles = ("-", "--", ":", "-.")
    drawn: dict[str, int] = {}  # runs of one act share its colour and differ in line style
    for g, r, (x, y, _, _) in curves:
        act = g.key.get("act", "")
        label = act + (f" ({_describe(g, extra)})" if extra else "")
        label += f" seed={r.labels.get('seed')}" if seeds else ""
        style = styles[drawn.get(act, 0) % len(styles)]
        drawn[act] = drawn.get(act, 0) + 1
        ax.plot(x, y, style, color=act_color(act), alpha=0.85, label=label)
    x_names = {c[2] for _, _, c in curves}
    y_names = {c[3] for _, _, c in curves}
    ax.set(xlabel="training samples" if x_names == {"train/samples"} else
           "epoch (runs without train/samples)" if x_names == {"epoch"} else
           "training samples, or epoch where not logged",
           ylabel=" / ".join(sorted(y_names)), title="Learning curves (validation split)")
    if x_names == {"train/samples"}:  # 100k, not 100000 run together with its neighbours
        ax.xaxis.set_major_formatter(FuncFormatter(_samples_tick))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _save(fig, path)


def _samples_tick(value: float, _pos: int) -> str:
    """A sample count as a short tick label: 0, 500, 250k, 1.5M."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    return f"{value / 1e3:g}k" if abs(value) >= 1e3 else f"{value:g}"


def read_expert_usage(run_dir: Path) -> np.ndarray | None:
    """[steps, experts] share of tokens per expert at the run's last validation, or None."""
    rows = [r for r in read_history(run_dir) or []
            if any(k.startswith("val_curve/expert_usage") and v for k, v in r.items())]
    if not rows:
        return None
    cells = {}
    for key, value in rows[-1].items():
        if key.startswith("val_curve/expert_usage_t") and value:
            step, expert = key.removeprefix("val_curve/expert_usage_t").split("_e")
            cells[int(step) - 1, int(expert)] = float(value)
    usage = np.zeros((max(t for t, _ in cells) + 1, max(e for _, e in cells) + 1))
    for (t, e), value in cells.items():
        usage[t, e] = value
    return usage


def expert_usage(groups: Sequence[Group], path: Path) -> None:
    """Share of tokens routed to each expert at each recursive step, one panel per run."""
    runs = [(g, r, read_expert_usage(r.path)) for g in groups for r in g.runs]
    runs = [x for x in runs if x[2] is not None][:MAX_PANELS]
    if not runs:
        raise SkipPlot("no run logged val_curve/expert_usage (model=dyntrm_moe)")
    extra = _varying(groups)
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.2), squeeze=False)
    for ax, (g, _, usage) in zip(axes[0], runs, strict=True):
        image = ax.imshow(usage, aspect="auto", cmap="viridis", vmin=0, vmax=max(0.5, usage.max()))
        ax.set(xlabel="expert", ylabel="step", title=_describe(g, extra, g.key.get("act", "")),
               xticks=range(usage.shape[1]), yticks=range(usage.shape[0]),
               yticklabels=range(1, usage.shape[0] + 1))
    fig.colorbar(image, ax=axes[0].tolist(), label="share of tokens")
    _save(fig, path)


def write_plots(groups: Sequence[Group], out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw every figure into ``out_dir``; returns (name -> path, name -> why it was skipped)."""
    preds = {r.path: read_predictions(r.path) for g in groups for r in g.runs}
    figures = {
        "pareto.png": lambda p: pareto(groups, p),
        "exit_hist.png": lambda p: exit_hist(groups, preds, p),
        "complexity_vs_oracle.png": lambda p: complexity_vs_oracle(groups, preds, p),
        "threshold_sweep.png": lambda p: threshold_sweep(groups, p),
        "learning_curve.png": lambda p: learning_curve(groups, p),
        "expert_usage.png": lambda p: expert_usage(groups, p),
    }
    written, skipped = {}, {}
    for name, draw in figures.items():
        try:
            draw(Path(out_dir) / name)
            written[name] = Path(out_dir) / name
        except SkipPlot as why:
            skipped[name] = str(why)
        finally:
            plt.close("all")
    return written, skipped
