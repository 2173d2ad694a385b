"""model=trm: TRM's two-latent recursion, its gradient-free cycles, and the shared interface."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, check_adaptive_matches_masked, run_cli

from rds_act.build import build_module, build_trainer
from rds_act.errors import ConfigError
from rds_act.models.layers import CellReadout, GridTokenEncoder
from rds_act.models.trm import TRM


def make_trm(**kwargs) -> TRM:
    torch.manual_seed(0)
    encoder, readout = GridTokenEncoder(5, 3, 3, 16), CellReadout(16, 5)
    kwargs = {"d_model": 16, "n_heads": 2, "T_max": 3, "n_latent": 2, "cycles": 3, **kwargs}
    return TRM(encoder, readout, **kwargs)


def grid_batch(n: int = 6) -> dict[str, torch.Tensor]:
    return {"x": torch.randint(0, 5, (n, 9), generator=torch.Generator().manual_seed(1))}


class CountGradCalls:
    """Forward hook on the shared block: how many applications ran with and without grad."""

    def __init__(self, block: torch.nn.Module):
        self.grad = self.no_grad = 0
        block.register_forward_hook(self)

    def __call__(self, module, args, out):
        if torch.is_grad_enabled():
            self.grad += 1
        else:
            self.no_grad += 1


@pytest.mark.parametrize("cycles", [1, 3])
def test_only_the_last_cycle_of_a_step_carries_gradient(cycles):
    model = make_trm(cycles=cycles, n_latent=2)
    calls = CountGradCalls(model.block)
    state = model.init_state(grid_batch())
    y0 = state.h.detach().clone().requires_grad_(True)
    state.h = y0
    new, routing = model.advance(state)
    assert routing is None
    assert (calls.grad, calls.no_grad) == (3, 3 * (cycles - 1))  # n_latent + 1 per cycle
    assert model.block_applications == 3 * cycles
    (grad,) = torch.autograd.grad(new.h.sum(), y0, allow_unused=True, retain_graph=True)
    if cycles == 1:  # one cycle: the step depends on the previous answer through the graph
        assert grad is not None and grad.abs().sum() > 0
    else:  # the gradient-free cycles cut it, as TRM's detached carry does
        assert grad is None
    params = torch.autograd.grad(new.h.sum(), list(model.encoder.parameters())[0])
    assert params[0].abs().sum() > 0  # the input still trains through the last cycle


def test_one_step_one_cycle_is_the_formula_by_hand():
    model = make_trm(T_max=1, cycles=1, n_latent=1).eval()
    b = grid_batch()
    with torch.no_grad():
        unrolled = model.unroll(b)
        x = model.encoder(b)
        y0, z0 = model.y_init.expand_as(x), model.z_init.expand_as(x)
        f = lambda a: model.state_norm(model.block(a))  # noqa: E731
        z = f(z0 + y0 + x)
        y = f(y0 + z)
        expected = model.readout(model.out_norm(y))
    assert unrolled.steps == 1
    torch.testing.assert_close(unrolled.preds[0], expected)


def test_adaptive_forward_carries_both_latents_of_the_rows_it_keeps():
    _, exits, _ = check_adaptive_matches_masked(make_trm(T_max=4).eval(), grid_batch(12), 4)
    assert exits.unique().numel() == 4


def test_mlp_mixer_needs_a_fixed_length_and_refuses_dyntrm_only_options():
    model = make_trm(mixer="mlp")  # the grid encoder supplies seq_len
    assert model.unroll(grid_batch()).preds.shape == (3, 6, 9, 5)
    with pytest.raises(ConfigError, match="model.step_signal is a DynTRM option"):
        make_trm(step_signal=True)
    with pytest.raises(ConfigError, match=r"model.n_latent=0 is not allowed"):
        make_trm(n_latent=0)


def test_trm_trains_and_tests_on_a_grid_task(compose_cfg):
    cfg = compose_cfg("model=trm", "model.mixer=mlp", "task=sudoku", "task.datamodule.size=4",
                      "task.datamodule.n_puzzles=16", "model.cycles=2", "model.n_latent=1",
                      *TINY, "trainer.fast_dev_run=true")
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert isinstance(module.model, TRM) and module.model.cycles == 2
    # one batch of 16 unrolled to T_max steps of 2 cycles x (1 + 1) block applications
    assert module.applications_seen == 16 * cfg.task.T_max * 2 * 2
    assert len(module.predictions) == 64
    assert 0.0 <= float(trainer.callback_metrics["test/cell_acc"]) <= 1.0


def test_mlp_mixer_on_a_variable_length_task_is_one_error_line(tmp_path):
    proc = run_cli("rds_act.train", ["model=trm", "model.mixer=mlp", "task=rpc_small",
                                     f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model.mixer=mlp needs" in lines[0]
    assert "Traceback" not in proc.stderr
