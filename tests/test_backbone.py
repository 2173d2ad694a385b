"""DynTRM: shared weights across steps, grad_steps, per-sample evaluation, adaptive == masked."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import HaltAtOwnStep, check_adaptive_matches_masked

from rds_act.act import PLSD
from rds_act.errors import ConfigError
from rds_act.losses import CrossEntropyLoss
from rds_act.models import DynTRM
from rds_act.models.layers import ClassReadout, PairTokenEncoder
from rds_act.module import ACTLitModule


def make_model(scale: float = 1.0, **kwargs) -> DynTRM:
    torch.manual_seed(0)
    model = DynTRM(PairTokenEncoder(64, 32), ClassReadout(32, 64), d_model=32, n_heads=4, **kwargs)
    with torch.no_grad():
        for p in model.block.parameters():
            p.mul_(scale)  # large random weights make every step predict something different
    return model


def batch(n: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (n, 17, 2), generator=g)
    x[:, -1, 1] = 64
    return {"x": x, "y": torch.randint(0, 64, (n,), generator=g),
            "steps_required": torch.randint(1, 9, (n,), generator=g), "index": torch.arange(n)}


def test_one_block_shared_across_steps():
    model = make_model(T_max=8)
    names = [n for n, _ in model.named_parameters() if n.startswith("block.")]
    assert names and not any("1." in n.split("block.")[1][:2] for n in names)
    out = model.unroll(batch(), steps=12)  # more steps than T_max reuse the same block
    assert out.preds.shape == (12, 12, 64) and out.halt_logits.shape == (12, 12, 2)


def test_block_layers_stack_layers_inside_the_one_shared_block():
    one, two = make_model(T_max=3), make_model(T_max=3, block_layers=2)
    assert sum(p.numel() for p in two.block.parameters()) == 2 * sum(
        p.numel() for p in one.block.parameters())
    assert [n for n, _ in one.named_parameters() if n.startswith("block.")][0] == "block.norm1.weight"
    with torch.no_grad():  # layer 0 = the one-layer block, layer 1 = identity (zero residual outputs)
        rest = {k: v for k, v in one.state_dict().items() if not k.startswith("block.")}
        two.load_state_dict(rest, strict=False)
        two.block[0].load_state_dict(one.block.state_dict())
        two.block[1].attn.out.weight.zero_()
        two.block[1].mlp.net[-1].weight.zero_()
        two.block[1].mlp.net[-1].bias.zero_()
    b = batch()
    torch.testing.assert_close(two.unroll(b).summaries, one.unroll(b).summaries)
    with torch.no_grad():  # the second layer now acts, at every step
        two.block[1].attn.out.weight.normal_()
    assert not torch.allclose(two.unroll(b).summaries[0], one.unroll(b).summaries[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"block_layers": 0}, r"model.block_layers=0 must be an integer >= 1"),
    ({"block_layers": 1.5}, r"model.block_layers=1.5 must be an integer >= 1"),
    ({"block_layers": "2"}, r"model.block_layers=2 must be an integer >= 1"),
    ({"block_layers": 2, "num_experts": 4}, r"model.block_layers=2 with model.num_experts=4"),
])
def test_bad_block_layers_raise(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_model(**kwargs)


def block_grad_norm(model: DynTRM, step: int) -> float:
    model.zero_grad()
    model.unroll(batch()).preds[step - 1].sum().backward()
    grads = [p.grad for p in model.block.parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


def test_grad_steps_limits_backprop_to_last_k():
    model = make_model(T_max=6, grad_steps=2)
    assert block_grad_norm(model, 4) == 0.0  # steps 1..4 ran under no_grad
    assert block_grad_norm(model, 5) > 0.0
    assert block_grad_norm(make_model(T_max=6), 4) > 0.0


@pytest.mark.parametrize("signal", [False, True])
def test_adaptive_forward_matches_masked_reference(signal):
    model = make_model(T_max=5, step_signal=signal).eval()
    _, exits, _ = check_adaptive_matches_masked(model, batch(20), 5)
    assert exits.unique().numel() == 5


def test_module_scores_own_exit_step_not_post_loop_state():
    model = make_model(scale=4.0, T_max=5).eval()
    module = ACTLitModule(model, PLSD(), CrossEntropyLoss(), torch.optim.AdamW,
                          exit_rule=HaltAtOwnStep(5))
    b = batch(20)
    with torch.no_grad():
        unrolled = model.unroll(b)
        per_step_pred = unrolled.preds.argmax(-1)  # [T, B]
        # relabel so each sample is right only at its own exit step
        exits = torch.arange(20) % 5 + 1
        b["y"] = per_step_pred[exits - 1, torch.arange(20)]
        _, record = module.evaluate(b, "test")
    assert torch.equal(record.exit_step, exits)
    assert record.correct_exit.all()
    final_right = per_step_pred[-1] == b["y"]
    assert record.correct_final.tolist() == final_right.tolist()
    assert not final_right.all()


def test_predict_step_halts_per_sample_like_evaluation():
    model = make_model(scale=4.0, T_max=5).eval()
    module = ACTLitModule(model, PLSD(), CrossEntropyLoss(), torch.optim.AdamW,
                          exit_rule=HaltAtOwnStep(5))
    b = batch(20)
    out = module.predict_step(b, 0)
    with torch.no_grad():
        _, record = module.evaluate(b, "test")
    assert torch.equal(out["exit_step"], record.exit_step)
    assert torch.equal(out["pred"].argmax(-1) == b["y"], record.correct_exit)


def test_predict_refuses_the_oracle_exit_in_one_line():
    import pytest

    from rds_act.act import OracleExit
    from rds_act.errors import ConfigError

    module = ACTLitModule(make_model(T_max=3), PLSD(), CrossEntropyLoss(), torch.optim.AdamW,
                          exit_rule=OracleExit())
    with pytest.raises(ConfigError, match="eval.exit_rule=oracle needs every step's loss"):
        module.predict_step(batch(4), 0)


@pytest.mark.parametrize("hidden", [0, 16])
def test_halt_grad_scales_what_the_halting_loss_sends_into_the_backbone(hidden):
    grads = {}
    for share in (0.0, 0.1, 1.0):
        model = make_model(T_max=3, halt_grad=share, halt_hidden=hidden)
        last = model.halt_head[-1] if hidden else model.halt_head
        torch.nn.init.normal_(last.weight)  # zero at init: no gradient to pass back
        model.unroll(batch()).halt_logits.sum().backward()
        grads[share] = float(
            sum(p.grad.abs().sum() for p in model.block.parameters() if p.grad is not None)
        )
        assert last.weight.grad.abs().sum() > 0  # the head itself always learns
    assert grads[0.0] == 0.0
    assert grads[0.1] == pytest.approx(0.1 * grads[1.0], rel=1e-4)


def test_halt_confidence_shows_the_head_how_sure_the_readout_is():
    readout = ClassReadout(32, 64)
    uniform, sure = torch.zeros(3, 64), torch.zeros(3, 64)
    sure[:, 5] = 50.0
    conf = readout.confidence(uniform)
    assert torch.allclose(conf, torch.tensor([-math.log(64), math.log(64)]).expand(3, 2))
    assert torch.allclose(readout.confidence(sure), torch.zeros(3, 2), atol=1e-4)
    model = make_model(T_max=2, halt_confidence=True)
    assert model.halt_head.in_features == 32 + 2
    torch.nn.init.normal_(model.halt_head.weight)
    base = model.unroll(batch()).halt_logits
    with torch.no_grad():
        model.halt_head.weight[:, :32] = 0.0  # only the confidence features left
    assert model.unroll(batch()).halt_logits.std() > 0
    assert not torch.allclose(base, model.unroll(batch()).halt_logits)


def test_vector_encoder_refuses_counts_it_cannot_embed():
    """A count above the embedding table fails naming the key to raise (it used to be clamped)."""
    from rds_act.errors import ConfigError
    from rds_act.models.layers import VectorEncoder

    encoder = VectorEncoder(n_coords=4, d_model=8, max_count=16)
    ok = encoder({"x": torch.zeros(2, 4), "count": torch.tensor([0, 16])})
    assert ok.shape == (2, 4, 8)
    with pytest.raises(ConfigError, match=r"count 17 exceeds task.encoder.max_count=16"):
        encoder({"x": torch.zeros(2, 4), "count": torch.tensor([3, 17])})


def test_vector_encoder_position_scale():
    """Coordinate embeddings start at ``pos_std`` (large, so attention can find a source
    coordinate by position from the start); a negative scale is refused by name."""
    from rds_act.errors import ConfigError
    from rds_act.models.layers import VectorEncoder

    torch.manual_seed(0)
    assert float(VectorEncoder(n_coords=32, d_model=64).pos.std()) == pytest.approx(1.0, rel=0.1)
    assert VectorEncoder(n_coords=32, d_model=64, pos_std=0.02).pos.std() < 0.03
    with pytest.raises(ConfigError, match=r"task.encoder.pos_std=-1.0 is out of range"):
        VectorEncoder(n_coords=4, d_model=8, pos_std=-1.0)


def test_step_signal_tells_the_shared_block_which_step_it_is_on():
    """A state that is a fixed point of the block stays put without the signal; with it, the
    same state and input give a different output at each step."""
    from rds_act.models.dyntrm import State

    for signal, differs in ((False, False), (True, True)):
        model = make_model(T_max=4, step_signal=signal).eval()
        state = model.init_state(batch(4))
        with torch.no_grad():
            first = model.step(State(state.h, state.inject, 0)).pred
            third = model.step(State(state.h, state.inject, 2)).pred
        assert (not torch.allclose(first, third)) is differs
    assert model.step(state).state.t == 1


@pytest.mark.slow  # torch.compile takes ~40 s of CPU
def test_compiled_block_keeps_names_and_outputs():
    """model.compile=true: the same parameter names (checkpoints load either way) and the same
    predictions as the eager block, to float tolerance."""
    eager = make_model(T_max=3).eval()
    compiled = make_model(T_max=3, compile=True).eval()
    assert list(eager.state_dict()) == list(compiled.state_dict())
    compiled.load_state_dict(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(compiled.unroll(batch()).preds, eager.unroll(batch()).preds,
                                   atol=1e-4, rtol=1e-4)


def test_an_advance_that_returns_a_bare_state_is_one_error_line():
    class StateOnly(DynTRM):  # written for the earlier hook, which returned the State alone
        def advance(self, state):
            return super().advance(state)[0]

    model = make_model()
    model.__class__ = StateOnly
    with pytest.raises(ConfigError, match=r"StateOnly.advance returned State; allowed: a tuple"):
        model.unroll(batch())
