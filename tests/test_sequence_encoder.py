"""task.encoder.embed: how a parity chunk becomes a token (linear map of one-hot codes, or one
learned vector per pattern)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, run_cli

from rds_act.errors import ConfigError
from rds_act.models.layers import SequenceTokenEncoder


def tokens_of(encoder: SequenceTokenEncoder, *chunks: list[int]) -> torch.Tensor:
    """The (position-free) token of each chunk, in a batch of one sequence."""
    x = torch.tensor([sum(chunks, [])])
    return (encoder({"x": x})[0, :-1] - encoder.pos).detach()


def test_linear_tokens_add_up_and_lookup_tokens_need_not():
    """A linear chunk embedding is additive in its entries (so the token of [+1, +1] is fixed by
    those of [+1, 0], [0, +1] and [0, 0]); a lookup gives each pattern its own vector."""
    torch.manual_seed(0)
    for kind, additive in (("linear", True), ("lookup", False)):
        enc = SequenceTokenEncoder(n_tokens=3, seq_len=8, d_model=16, chunk=2, embed=kind)
        a, b, both, none = tokens_of(enc, [2, 0], [0, 2], [2, 2], [0, 0])
        assert torch.allclose(a + b - none, both, atol=1e-6) is additive, kind


def test_lookup_indexes_every_pattern_once():
    enc = SequenceTokenEncoder(n_tokens=3, seq_len=4, d_model=8, chunk=4, embed="lookup")
    grid = torch.cartesian_prod(*[torch.arange(3)] * 4)  # all 81 patterns of four entries
    out = enc({"x": grid})[:, 0] - enc.pos[0]
    assert torch.allclose(out, enc.embed.weight[(grid * enc.place).sum(-1)], atol=1e-6)
    assert len({tuple(row.tolist()) for row in out}) == 81


@pytest.mark.parametrize("kwargs, message", [
    ({"embed": "hash"}, r"task.encoder.embed='hash' must be one of: linear, lookup"),
    ({"embed": "lookup", "chunk": 16, "seq_len": 96},
     r"task.encoder.embed=lookup with task.encoder.chunk=16 needs 3\*\*16 = 43046721 patterns"),
])
def test_bad_embed_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SequenceTokenEncoder(**{"n_tokens": 3, "seq_len": 8, "d_model": 8, "chunk": 2, **kwargs})


def test_cli_trains_with_lookup_and_refuses_an_unknown_embed(tmp_path):
    ok = run_cli("rds_act.train", ["task=parity", "task.encoder.chunk=4", "task.encoder.embed=lookup",
                                   *TINY, "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                                   f"hydra.run.dir={tmp_path / 'ok'}"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "ok" / "metrics.json").exists()
    bad = run_cli("rds_act.train", ["task=parity", "task.encoder.embed=hash", *TINY,
                                    f"hydra.run.dir={tmp_path / 'bad'}"], tmp_path)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines() == [
        "error: task.encoder.embed='hash' is not allowed; allowed: linear or lookup"]
    assert not (tmp_path / "bad").exists()


def test_cli_table_too_large_is_the_only_line(tmp_path):
    """A check the constructor makes (after the seed is set) still reaches the user as the one
    line on either stream: no "Seed set to" line before it."""
    bad = run_cli("rds_act.train", ["task=parity", "task.encoder.chunk=12", "task.encoder.embed=lookup",
                                    *TINY, f"hydra.run.dir={tmp_path / 'big'}"], tmp_path)
    assert bad.returncode == 2, bad.stderr[-2000:]
    lines = (bad.stdout + bad.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: task.encoder.embed=lookup with task.encoder.chunk=12 needs 3**12 = 531441"), lines
    assert not (tmp_path / "big").exists()
