"""Parity as the papers ran it: task.datamodule.variant picks pondernet (default), graves or hybrid;
each split draws its non-zero counts from the protocol's range, and overrides win over the table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli, run_script
from omegaconf import OmegaConf

from rds_act.build import build_module
from rds_act.data import ParityDataModule
from rds_act.data.parity import VARIANTS
from rds_act.errors import ConfigError

# variant -> (entries, train/val/test range, ood range), as the papers describe them
PROTOCOLS = {
    "pondernet": (96, (1, 48), (49, 96)),
    "graves": (64, (1, 64), (1, 64)),
    "hybrid": (64, (1, 48), (49, 64)),
}
# enough samples per split that every count of a range shows up; no curriculum narrowing train
SIZES = ["task.datamodule.n_train=1500", "task.datamodule.n_val=1500", "task.datamodule.n_test=1500",
         "task.datamodule.n_ood=1500", "task.datamodule.curriculum=null"]


def observed(datamodule: ParityDataModule, split: str) -> tuple[int, set[int]]:
    """(entries per sample, the set of non-zero counts) of one generated split, after checking
    that each sample's difficulty is its count of non-zero entries."""
    data = datamodule.make_split(split)
    nonzero = (data["x"] != 0).sum(1)
    assert torch.equal(nonzero, data["difficulty"])
    return data["x"].shape[1], set(nonzero.tolist())


@pytest.mark.parametrize("variant", [None, *PROTOCOLS])
def test_each_variant_draws_its_protocol_per_split(compose_cfg, variant):
    """The composed config shows the variant's numbers, the encoder reads dim entries in chunks
    of 8, and every split's generated counts cover exactly the protocol's range."""
    dim, (lo, hi), (ood_lo, ood_hi) = PROTOCOLS[variant or "pondernet"]  # None: the default
    chosen = [] if variant is None else [f"task.datamodule.variant={variant}"]
    cfg = compose_cfg("task=parity", *chosen, *SIZES, "model.d_model=32")
    dm_cfg = cfg.task.datamodule
    assert dm_cfg.variant == (variant or "pondernet")
    assert (dm_cfg.dim, dm_cfg.min_nonzero, dm_cfg.max_nonzero) == (dim, lo, hi)
    assert (dm_cfg.ood_min_nonzero, dm_cfg.ood_max_nonzero) == (ood_lo, ood_hi)
    assert cfg.task.encoder.seq_len == dim
    module, datamodule = build_module(cfg)
    assert module.model.encoder.pos.shape[0] == dim // 8  # 96 entries -> 12 tokens, 64 -> 8
    for split in ("train", "val", "test"):
        assert observed(datamodule, split) == (dim, set(range(lo, hi + 1))), split
    assert observed(datamodule, "ood") == (dim, set(range(ood_lo, ood_hi + 1)))


def test_graves_ood_is_fresh_samples_of_the_training_distribution():
    dm = ParityDataModule(variant="graves", n_train=200, n_ood=200, curriculum=None)
    assert dm.difficulty_range("ood") == dm.difficulty_range("train") == (1, 64)
    train, ood = dm.make_split("train")["x"], dm.make_split("ood")["x"]
    assert not any(torch.equal(a, b) for a, b in zip(train, ood, strict=True))


def test_config_table_matches_the_datamodule_table(compose_cfg):
    """conf/task/parity.yaml's `variants` and rds_act.data.parity.VARIANTS say the same thing."""
    variants = OmegaConf.to_container(compose_cfg("task=parity").task.variants, resolve=True)
    assert list(variants) == list(VARIANTS)
    for name, row in variants.items():
        dm = ParityDataModule(variant=name)
        assert row == {"dim": dm.dim, "min_nonzero": dm.min_nonzero, "max_nonzero": dm.max_nonzero,
                       "ood_min_nonzero": dm.ood_min_nonzero, "ood_max_nonzero": dm.ood_max_nonzero}
        assert (dm.dim, dm.difficulty_range("train"), dm.difficulty_range("ood")) == PROTOCOLS[name]


@pytest.mark.parametrize("overrides, dim, train, ood", [
    (["task.datamodule.max_nonzero=40"], 96, (1, 40), (49, 96)),
    (["task.datamodule.variant=graves", "task.datamodule.max_nonzero=40"], 64, (1, 40), (1, 64)),
    (["task.datamodule.variant=hybrid", "task.datamodule.dim=72", "task.datamodule.ood_max_nonzero=72"],
     72, (1, 48), (49, 72)),
])
def test_an_explicit_override_wins_over_the_table(compose_cfg, overrides, dim, train, ood):
    cfg = compose_cfg("task=parity", *overrides, *SIZES, "model.d_model=32")
    module, datamodule = build_module(cfg)
    assert cfg.task.encoder.seq_len == dim and module.model.encoder.pos.shape[0] == dim // 8
    assert (datamodule.difficulty_range("train"), datamodule.difficulty_range("ood")) == (train, ood)
    assert observed(datamodule, "train") == (dim, set(range(train[0], train[1] + 1)))
    assert observed(datamodule, "ood") == (dim, set(range(ood[0], ood[1] + 1)))


def test_an_unset_ood_lower_bound_follows_the_training_range():
    """A config saved before ood_min_nonzero existed (an older checkpoint's: no variant either)
    keeps its ood split just past the training range; graves' starts where training starts."""
    old = ParityDataModule(dim=64, min_nonzero=1, max_nonzero=8, ood_max_nonzero=24)
    assert (old.difficulty_range("train"), old.difficulty_range("ood")) == ((1, 8), (9, 24))
    graves = ParityDataModule(variant="graves", min_nonzero=5)
    assert graves.difficulty_range("ood") == graves.difficulty_range("train") == (5, 64)


@pytest.mark.parametrize("kwargs, message", [
    # ood starting inside the training range would mix seen and unseen counts
    ({"variant": "hybrid", "max_nonzero": 56, "ood_min_nonzero": 49},
     "max_nonzero=56, ood_min_nonzero=49, ood_max_nonzero=64"),
    ({"variant": "graves", "ood_max_nonzero": 65}, "ood_max_nonzero=65, dim=64"),
    ({"min_nonzero": 0}, "min_nonzero=0, max_nonzero=48"),
    ({"variant": "pondernet", "dim": 64}, "ood_max_nonzero=96, dim=64"),
])
def test_bad_ranges_are_one_config_error_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        ParityDataModule(**kwargs)
    assert "\n" not in str(err.value) and f"variant={kwargs.get('variant', 'pondernet')}" in str(err.value)


def test_unknown_variant_names_the_allowed_ones(compose_cfg):
    allowed = r"task.datamodule.variant='foo' is unknown; allowed: pondernet, graves, hybrid"
    with pytest.raises(ConfigError, match=allowed):
        ParityDataModule(variant="foo")
    with pytest.raises(ConfigError, match=allowed):  # before any value interpolates through it
        build_module(compose_cfg("task=parity", "task.datamodule.variant=foo"))


@pytest.mark.parametrize("variant, dim, ood", [(None, 96, (49, 96)), ("graves", 64, (1, 64))])
def test_cli_trains_each_variant(tmp_path, variant, dim, ood):
    """One tiny epoch through the entry point; the run's recorded config resolves to the
    variant's entry count and its ood predictions carry the variant's counts."""
    run = tmp_path / "run"
    chosen = [] if variant is None else [f"task.datamodule.variant={variant}"]
    proc = run_cli("rds_act.train", ["task=parity", *chosen, *TINY, "trainer.max_epochs=1",
                                     "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = OmegaConf.load(run / ".hydra" / "config.yaml")
    task = OmegaConf.to_container(recorded.task, resolve=True)  # resolves through task.variants
    assert task["datamodule"]["variant"] == (variant or "pondernet")
    assert task["datamodule"]["dim"] == task["encoder"]["seq_len"] == dim
    assert (task["datamodule"]["ood_min_nonzero"], task["datamodule"]["ood_max_nonzero"]) == ood
    with open(run / "predictions.csv") as f:
        counts = [int(r["difficulty"]) for r in csv.DictReader(f) if r["split"] == "ood"]
    assert counts and all(ood[0] <= c <= ood[1] for c in counts)
    assert max(counts) > 48  # beyond hybrid's 1..48 training range for both


def test_cli_unknown_variant_is_one_error_line(tmp_path):
    proc = run_cli("rds_act.train", ["task=parity", "task.datamodule.variant=foo", *TINY,
                                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: task.datamodule.variant='foo' is unknown; allowed: pondernet, graves, hybrid"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists()


def test_rho_ceiling_script(capsys):
    """scripts/parity_rho_ceiling.py: with one entry per token the odd tokens are the +1s (ρ with
    the count high on test); the wider the chunk, the less the odd tokens follow the count, and
    past the training range (ood) not at all at four entries. A bad option is one error line."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "parity_rho_ceiling.py"
    code, out, err = run_script(script, ["chunks=1,4", "n=4000"], capsys)
    assert code == 0, err
    rows = {ln.split("|")[1].strip(): [float(c) for c in ln.split("|")[3:5]]
            for ln in out.splitlines() if ln.startswith(("| test", "| ood"))}
    assert rows["test"][0] > 0.9 and rows["test"][1] < rows["test"][0]
    assert abs(rows["ood"][1]) < 0.15 < rows["ood"][0]
    code, out, err = run_script(script, ["n=many"], capsys)
    assert code == 2 and err.strip() == "error: n='many' must be an integer", err
