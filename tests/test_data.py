"""Task generators: labels follow the rule, no shortcut, deterministic in (seed, split, index)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY, run_cli

from rds_act.data import ParityDataModule, RPCDataModule, SparseTransformDataModule
from rds_act.errors import ConfigError


def follow_chain(x: torch.Tensor) -> tuple[int, int]:
    """Independent reference: walk the memory from the query's start key; return (answer, hops)."""
    memory = {int(k): int(v) for k, v in x[:-1].tolist()}
    assert len(memory) == x.shape[0] - 1, "keys must be distinct"
    pointer, hops = int(x[-1, 0]), 0
    while pointer in memory:
        pointer, hops = memory[pointer], hops + 1
    return pointer, hops


@pytest.fixture(scope="module", params=[True, False], ids=["batched", "per_sample"])
def rpc(request):
    dm = RPCDataModule(n_train=300, n_val=50, n_test=50, n_ood=300, seed=3, batched=request.param)
    dm.setup()
    return dm


@pytest.mark.parametrize("split", ["train", "ood"])
def test_rpc_label_is_end_of_chain(rpc, split):
    data = rpc.data[split].tensors
    for x, y, steps in zip(data["x"], data["y"], data["steps_required"], strict=True):
        answer, hops = follow_chain(x)
        assert answer == int(y) and hops == int(steps)
        assert x[-1, 1] == 64  # the query row carries the padding id, not a value


def test_rpc_chain_lengths_cover_train_and_ood_ranges(rpc):
    train = rpc.data["train"].tensors["steps_required"]
    ood = rpc.data["ood"].tensors["steps_required"]
    assert set(train.tolist()) == set(range(1, 9))
    assert set(ood.tolist()) == set(range(1, 13))


def test_rpc_has_no_one_step_shortcut(rpc):
    """Guessing a value that is not a key scores at most 1/4: every memory holds >= 4 chains."""
    for split in ("train", "ood"):
        expected = []
        for x in rpc.data[split].tensors["x"]:
            keys, values = set(x[:-1, 0].tolist()), x[:-1, 1].tolist()
            ends = [v for v in values if v not in keys]
            assert len(ends) == len(set(ends)) >= 4
            expected.append(1.0 / len(ends))
        assert np.mean(expected) <= 0.25


def test_generators_are_deterministic_per_index():
    a = RPCDataModule(seed=7, n_train=40).make_split("train")
    b = RPCDataModule(seed=7, n_train=80).make_split("train")
    c = RPCDataModule(seed=8, n_train=40).make_split("train")
    assert torch.equal(a["x"], b["x"][:40]) and torch.equal(a["y"], b["y"][:40])
    assert not torch.equal(a["x"], c["x"])
    s1 = SparseTransformDataModule(seed=1, variant="seed").make_split("val", 30)
    s2 = SparseTransformDataModule(seed=1, variant="seed").make_split("val", 30)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("make", [
    lambda **kw: RPCDataModule(n_slots=8, vocab=32, max_hops=4, ood_max_hops=5, **kw),
    lambda **kw: ParityDataModule(**kw),
], ids=["rpc", "parity"])
def test_batched_samples_do_not_depend_on_the_batch_that_makes_them(make):
    """Counter-based draws: sample i is the same made alone, inside a longer split, or as the
    slice a DDP shard or a prefetch asks for; another seed or split gives other samples."""
    dm = make(seed=5)
    whole = dm.make_split("train", 80)
    part = dm.make_split("train", 10, start=30)
    assert torch.equal(part["index"], torch.arange(30, 40))
    assert all(torch.equal(part[k], whole[k][30:40]) for k in whole)
    assert not torch.equal(make(seed=6).make_split("train", 80)["x"], whole["x"])
    assert not torch.equal(dm.make_split("val", 80)["x"], whole["x"])


def test_batched_rpc_draws_the_per_sample_distribution():
    """The batched stream is another draw of the same distribution: chain lengths uniform,
    and the number of chains per memory (the cut points' law) as the per-sample generator's."""
    def stats(batched: bool) -> tuple[np.ndarray, float]:
        data = RPCDataModule(seed=0, batched=batched).make_split("ood", 4000)
        chains = []
        for x in data["x"]:
            keys = set(x[:-1, 0].tolist())
            chains.append(sum(v not in keys for v in x[:-1, 1].tolist()))
        return np.bincount(data["steps_required"].numpy(), minlength=13) / 4000, np.mean(chains)
    (hops, chains), (hops_ref, chains_ref) = stats(True), stats(False)
    assert np.abs(hops[1:] - 1 / 12).max() < 0.02 and hops[0] == 0
    assert np.abs(hops - hops_ref).max() < 0.03
    assert abs(chains - chains_ref) < 0.08, (chains, chains_ref)


def test_batched_parity_places_its_entries_uniformly():
    data = ParityDataModule(seed=0).make_split("train", 4000)
    x = data["x"].numpy()
    assert ((x > 0).sum(1) == data["difficulty"].numpy()).all()
    assert ((x == 2).sum(1) % 2 == data["y"].numpy()).all()
    per_position = (x > 0).mean(0)  # every position as likely to be non-zero
    assert per_position.max() - per_position.min() < 0.06
    assert abs((x == 2).sum() / (x > 0).sum() - 0.5) < 0.01
    counts = np.bincount(data["difficulty"].numpy(), minlength=49)[1:] / 4000
    assert np.abs(counts - 1 / 48).max() < 0.01


def test_batched_on_a_task_without_a_batched_generator_is_one_error_line(tmp_path):
    proc = run_cli("rds_act.train", ["task=sparse_transform", "+task.datamodule.batched=true",
                                     *TINY, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        "error: task.datamodule.batched=True: SparseTransformDataModule generates one sample at "
        "a time; allowed: false"]
    assert "Traceback" not in proc.stdout + proc.stderr and not (tmp_path / "run").exists()


def test_sparse_transform_target_is_rule_applied_count_times():
    dm = SparseTransformDataModule(seed=0, frac=0.25, rule_seed=5)
    data = dm.make_split("ood", 200)
    rule = dm.rule
    changed = np.flatnonzero(rule.mask)
    assert len(changed) == 8 and set(rule.source) == set(changed)  # pi is a cycle inside S
    for x, y, c in zip(data["x"], data["y"], data["count"], strict=True):
        ref = x.numpy().astype(np.float64).copy()
        for _ in range(int(c)):  # independent loop over the documented rule
            new = ref.copy()
            for i, j in zip(rule.target, rule.source, strict=True):
                new[i] = 0.5 * ref[i] + np.tanh(ref[j])
            ref = new
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-5)
        untouched = np.setdiff1d(np.arange(32), changed)
        np.testing.assert_array_equal(y.numpy()[untouched], x.numpy()[untouched])
    assert torch.equal(data["count"], data["steps_required"])
    assert int(data["count"].max()) > 8  # ood reaches beyond the training range


def test_sparse_transform_needs_each_step():
    """F^c differs from F^(c-1) on the changed coordinates: no step is a no-op."""
    dm = SparseTransformDataModule(seed=0)
    x = np.random.default_rng(0).standard_normal((500, 32)).astype(np.float32)
    for c in range(1, 12):
        diff = np.abs(dm.rule.apply(x, c) - dm.rule.apply(x, c - 1))[:, dm.rule.mask > 0]
        assert diff.mean() > 0.01


def test_sparse_seed_variant_hides_count():
    data = SparseTransformDataModule(seed=0, variant="seed").make_split("train", 300)
    assert int(data["count"].abs().sum()) == 0
    assert set(data["steps_required"].tolist()) <= set(range(1, 10))
    changed = (data["y"] != data["x"]).float()
    assert torch.all(changed <= data["mask"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_hops": 14}, "max_hops=14"),
        ({"n_val": 0}, "n_val=0"),
    ],
)
def test_rpc_bad_sizes(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RPCDataModule(**kwargs)


def test_sparse_bad_variant():
    with pytest.raises(ConfigError, match=r"variant='nope' is unknown; allowed"):
        SparseTransformDataModule(variant="nope")


def test_batches_carry_steps_required_and_index(rpc):
    batch = next(iter(rpc.val_dataloader()["ood"]))
    assert {"x", "y", "steps_required", "index"} <= set(batch)
    assert batch["x"].shape[1:] == (17, 2)


def test_fresh_train_samples_each_epoch_are_new_and_deterministic():
    class FakeTrainer:
        current_epoch = 0

    dm = RPCDataModule(n_train=20, n_val=5, n_test=5, n_ood=5, seed=2)
    dm.trainer = FakeTrainer()
    dm.setup()
    first = next(iter(dm.train_dataloader()))["index"]
    FakeTrainer.current_epoch = 1
    epoch1 = dm.train_dataloader().dataset.tensors
    assert sorted(first.tolist()) == list(range(20))
    assert epoch1["index"].tolist() == list(range(20, 40))
    again = RPCDataModule(n_train=20, seed=2).make_split("train", 20, 20)
    assert torch.equal(epoch1["x"], again["x"])


def test_parity_label_counts_plus_ones_and_ood_is_harder():
    """The default (pondernet) protocol: 96 entries, train 1..48, ood 49..96."""
    dm = ParityDataModule(n_train=300, n_val=10, n_test=10, n_ood=300, seed=0, curriculum=None)
    train, ood = dm.make_split("train"), dm.make_split("ood")
    for data, lo, hi in ((train, 1, 48), (ood, 49, 96)):
        x = data["x"]
        assert x.shape[1] == 96
        nonzero = (x != 0).sum(1)
        assert torch.equal(nonzero, data["difficulty"])
        assert int(nonzero.min()) >= lo and int(nonzero.max()) <= hi
        assert torch.equal((x == 2).sum(1) % 2, data["y"])
    assert 0.4 < float(train["y"].float().mean()) < 0.6
    assert int(train["steps_required"].abs().sum()) == 0  # unknown for parity


def test_parity_bad_range():
    with pytest.raises(ConfigError, match="max_nonzero=64, ood_min_nonzero=65, ood_max_nonzero=64"):
        ParityDataModule(variant="hybrid", max_nonzero=64)


def test_fresh_samples_need_the_trainer_to_reload_each_epoch():
    """fresh_train regenerates the training set in train_dataloader(); a trainer that does not
    reload it every epoch would silently train on epoch 0's samples for good."""
    from types import SimpleNamespace

    dm = RPCDataModule(n_train=8, n_val=4, n_test=4, n_ood=4, batch_size=4)
    dm.setup()
    dm.trainer = SimpleNamespace(reload_dataloaders_every_n_epochs=0, current_epoch=0)
    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs=0 with"):
        dm.train_dataloader()
    dm.trainer.reload_dataloaders_every_n_epochs = 1
    assert len(dm.train_dataloader()) == 2
    stale = RPCDataModule(n_train=8, n_val=4, n_test=4, n_ood=4, batch_size=4, fresh_train=False)
    stale.setup()
    stale.trainer = SimpleNamespace(reload_dataloaders_every_n_epochs=0, current_epoch=3)
    assert len(stale.train_dataloader()) == 2


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ddp_processes_share_out_the_samples(world):
    """Each process trains on its own equal share of an epoch (the same shuffled order on every
    process, split by rank) and evaluates its own share of each split, every sample exactly once."""

    class FakeTrainer:
        current_epoch, world_size = 0, world

    dm = RPCDataModule(n_train=20, n_val=7, n_test=7, n_ood=7, batch_size=4, eval_batch_size=2, seed=2)
    shares: dict[str, list[list[int]]] = {"train": [], "val": [], "ood": []}
    for rank in range(world):
        trainer = FakeTrainer()
        trainer.global_rank = rank
        dm.trainer = trainer
        dm.setup()
        shares["train"].append([i for b in dm.train_dataloader() for i in b["index"].tolist()])
        for split, loader in dm.val_dataloader().items():
            shares[split].append([i for b in loader for i in b["index"].tolist()])
    train = [i for share in shares["train"] for i in share]
    assert len(set(train)) == len(train) == 20 - 20 % world  # disjoint, equal, nothing repeated
    assert len({len(share) for share in shares["train"]}) == 1
    for split in ("val", "ood"):
        assert sorted(i for share in shares[split] for i in share) == list(range(7))


def test_evaluation_reads_splits_by_name_not_by_loader_position(compose_cfg):
    """The ood loader served first must still be scored as ood (its own T_max, its own keys)."""
    from rds_act.build import build_module, build_trainer

    def validate(order: tuple[str, ...]) -> dict[str, float]:
        cfg = compose_cfg("task=rpc_small", *TINY, "trainer.enable_progress_bar=false")
        torch.manual_seed(0)  # the same untrained weights both times
        module, datamodule = build_module(cfg)
        datamodule.setup("validate")
        served = datamodule.val_dataloader()
        datamodule.val_dataloader = lambda: {split: served[split] for split in order}
        results = build_trainer(cfg).validate(module, datamodule=datamodule, verbose=False)
        return {k: v for per_loader in results for k, v in per_loader.items()}

    usual, reversed_ = validate(("val", "ood")), validate(("ood", "val"))
    assert usual["ood/avg_exit"] != usual["val/avg_exit"]  # the two splits are told apart
    for key in ("val/acc", "val/avg_exit", "ood/acc", "ood/avg_exit", "val/loss", "ood/loss"):
        assert reversed_[key] == pytest.approx(usual[key]), key
