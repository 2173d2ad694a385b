"""training=deep_supervision: TRM's supervision-step loop with the batch carry."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, run_cli
from lightning import seed_everything

from rds_act.act import Fixed
from rds_act.build import build_module, build_trainer
from rds_act.training import DeepSupervisionModule

DS = ["training=deep_supervision", "act=fixed", "task=rpc_small", *TINY,
      "trainer.enable_progress_bar=false", "+trainer.limit_val_batches=0", "test=false"]


class HaltByIndex(Fixed):
    """Row with sample index i halts after (i % 3) + 1 supervision steps: a known schedule."""

    def __init__(self, module: DeepSupervisionModule):
        super().__init__()
        self.module = module

    def halt(self, step, t, carry=None):
        c = self.module.carry
        return (c.steps + 1) == (c.rows["index"] % 3) + 1, carry


class Recorder:
    """Wraps the module's carry operations to log what entered, what left, and the latents."""

    def __init__(self, module: DeepSupervisionModule):
        self.entered, self.left, self.checks, self.rows_run = [], [], 0, 0
        admit, step = module.admit, module.supervision_step

        def admit_and_log(pending, capacity):
            before = set() if module.carry is None else set(module.carry.rows["index"].tolist())
            rest = admit(pending, capacity)
            now = module.carry.rows["index"].tolist()
            self.entered += [i for i in now if i not in before]
            return rest

        def step_and_check(optimizer):
            carry = module.carry
            state = module.carried_state()
            fresh = module.model.init_state(carry.rows)
            for row in range(len(carry)):  # carried rows resume their latents, new rows start fresh
                want = fresh.h[row] if carry.steps[row] == 0 else carry.latents["h"][row]
                assert torch.equal(state.h[row], want)
                self.checks += int(carry.steps[row] > 0)
            ids, steps = carry.rows["index"].clone(), carry.steps + 1
            self.rows_run += len(carry)
            loss = step(optimizer)
            stay = set(module.carry.rows["index"].tolist())
            for i, s in zip(ids.tolist(), steps.tolist(), strict=True):
                if i not in stay:
                    self.left.append((i, s))
            return loss

        module.admit, module.supervision_step = admit_and_log, step_and_check


def test_halted_rows_are_replaced_the_rest_keep_their_latents_and_no_sample_repeats(compose_cfg):
    cfg = compose_cfg(*DS, "trainer.max_epochs=1", "task.datamodule.n_train=96")
    module, datamodule = build_module(cfg)
    module.act = HaltByIndex(module)
    record = Recorder(module)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert sorted(record.entered) == list(range(96))  # every sample of the epoch once
    assert module.samples_seen == 96
    assert module.applications_seen == record.rows_run  # compute: the rows each step ran
    assert record.checks > 0
    assert record.left and all(s == i % 3 + 1 for i, s in record.left)  # each at its own step
    in_flight = set(module.carry.rows["index"].tolist())
    assert {i for i, _ in record.left} | in_flight == set(range(96))
    # each batch of 16 takes as many optimizer steps as it needs to seat all its rows
    assert trainer.global_step > 96 // 16


@pytest.mark.parametrize("model", ["dyntrm", "dyntrm_moe"])  # moe: the balance loss trains too
def test_one_step_reduces_to_plain_training(compose_cfg, model):
    def weights(*regime: str) -> list[torch.Tensor]:
        cfg = compose_cfg(*DS, f"model={model}", *regime, "task.T_max=1", "trainer.max_epochs=2")
        seed_everything(0)
        module, datamodule = build_module(cfg)
        build_trainer(cfg).fit(module, datamodule=datamodule)
        return [p.detach().clone() for p in module.model.parameters()]

    unroll, supervised = weights("training=unroll"), weights()
    for a, b in zip(unroll, supervised, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(unroll, weights("training=unroll",
                                                                   "optimizer.lr=0.01"), strict=True))


def test_resume_restores_the_carry(compose_cfg, tmp_path):
    cfg = compose_cfg(*DS, "model=trm", "model.cycles=2", "model.n_latent=1", "trainer.max_epochs=1")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    saved = module.carry
    assert saved is not None and saved.latents is not None and set(saved.latents) == {"h", "z"}

    cfg2 = compose_cfg(*DS, "model=trm", "model.cycles=2", "model.n_latent=1", "trainer.max_epochs=2")
    resumed, datamodule2 = build_module(cfg2)
    resumed.on_load_checkpoint(torch.load(tmp_path / "one.ckpt", weights_only=False))
    for name in ("steps", "min_steps"):
        assert torch.equal(getattr(resumed.carry, name), getattr(saved, name))
    for key in saved.rows:
        assert torch.equal(resumed.carry.rows[key], saved.rows[key])
    for key in saved.latents:
        assert torch.equal(resumed.carry.latents[key], saved.latents[key])
    trainer2 = build_trainer(cfg2)
    trainer2.fit(resumed, datamodule=datamodule2, ckpt_path=str(tmp_path / "one.ckpt"))
    assert resumed.samples_seen == 2 * 64


def test_a_strategy_that_needs_every_step_is_one_error_line(tmp_path):
    proc = run_cli("rds_act.train", ["training=deep_supervision", "act=plsd",
                                     f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "act=plsd cannot train under training=deep_supervision" in lines[0]
    assert "Traceback" not in proc.stderr
