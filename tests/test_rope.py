"""model.rope: 2-D rotary positions from a grid encoder's (row, column) coordinates."""

from __future__ import annotations

import pytest
import torch
from helpers import check_adaptive_matches_masked, run_entry

from rds_act.models import DynTRM
from rds_act.models.layers import Attention, CellReadout, GridTokenEncoder, Rotary
from rds_act.models.trm import TRM


def cell(r: int, c: int, width: int = 5) -> int:
    return r * width + c


def test_a_score_depends_on_the_offset_between_two_cells_not_on_where_they_lie():
    rotary = Rotary(GridTokenEncoder(3, 5, 5, 16).coords, head_dim=8)
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    scores = rotary(q.expand(1, 1, 25, 8))[0, 0] @ rotary(k.expand(1, 1, 25, 8))[0, 0].T
    # one column right, anywhere on the grid: one score
    right = torch.stack([scores[cell(r, c), cell(r, c + 1)] for r in range(5) for c in range(4)])
    torch.testing.assert_close(right, right[:1].expand_as(right))
    down = torch.stack([scores[cell(r, c), cell(r + 1, c)] for r in range(4) for c in range(5)])
    torch.testing.assert_close(down, down[:1].expand_as(down))
    # rows and columns are told apart: one step right is not one step down, nor the same cell
    assert not torch.isclose(right[0], down[0]) and not torch.isclose(right[0], scores[0, 0])
    # a pure rotation: lengths kept
    x = torch.randn(2, 3, 25, 8)
    torch.testing.assert_close(rotary(x).norm(dim=-1), x.norm(dim=-1))


def test_attention_with_rope_is_the_same_layer_turned():
    attn = Attention(16, 2, rotary=Rotary(GridTokenEncoder(3, 3, 3, 16).coords, 8))
    x = torch.randn(2, 9, 16)
    with_rope = attn(x)
    attn.rotary = None
    assert not torch.allclose(with_rope, attn(x))  # the positions change what is attended
    assert sum(p.numel() for p in attn.parameters()) == 3 * 16 * 16 + 16 * 16  # no new weights


@pytest.mark.parametrize("backbone", [DynTRM, TRM])
def test_rope_backbones_halt_per_sample_like_their_masked_reference(backbone):
    torch.manual_seed(0)
    model = backbone(GridTokenEncoder(5, 3, 3, 16), CellReadout(16, 4), d_model=16, n_heads=2,
                     T_max=4, state_norm=False, rope=True).eval()
    assert all(m.rotary is not None for m in model.modules() if isinstance(m, Attention))
    assert not any("rotary" in key for key in model.state_dict())  # checkpoints unchanged
    batch = {"x": torch.randint(0, 5, (12, 9)), "y": torch.randint(0, 4, (12, 9))}
    check_adaptive_matches_masked(model, batch, 4)


@pytest.mark.parametrize("args, named", [
    (["task=parity", "model.rope=true"], "model.rope=true needs token coordinates"),
    (["task=sudoku", "model.rope=true", "model.mixer=mlp"], "model.mixer=mlp there is no attention"),
    (["task=sudoku", "model.rope=true", "model.n_heads=8", "model.d_model=24"],
     "model.rope needs each head's width"),
    (["model.rope=maybe"], "model.rope='maybe' is not allowed; allowed: true or false"),
])
def test_rope_where_it_cannot_apply_is_one_line(tmp_path, capsys, args, named):
    code, _, err = run_entry("rds_act.train", [*args, "logger=none", f"hydra.run.dir={tmp_path}/run"],
                             capsys, tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and named in errors[0], err[-1500:]
    assert not (tmp_path / "run").exists()
