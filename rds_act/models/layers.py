"""Building blocks of the DynTRM step: attention, MLP, the block, task encoders and readouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rds_act.errors import ConfigError, check_range, is_positive_int

if TYPE_CHECKING:
    from rds_act.models.moe import Routing


class Rotary(nn.Module):
    """Rotary position embedding (RoPE) over the axes of each token's coordinates: with 2-D
    coordinates (row, column) half of every head's channel pairs turn with the row and half with
    the column, so an attention score depends on the offset between two cells (one row up, one
    column left), the same everywhere on the grid and on grids larger than those trained on.
    ``coords``: [S, A] integer coordinates of the S tokens; no parameters (buffers not saved)."""

    def __init__(self, coords: Tensor, head_dim: int, base: float = 10000.0):
        super().__init__()
        n_axes = coords.shape[1]
        if head_dim % (2 * n_axes):
            raise ConfigError(f"model.rope needs each head's width (d_model / n_heads = {head_dim}) "
                              f"to split into channel pairs per axis: a multiple of {2 * n_axes}")
        per_axis = head_dim // n_axes
        freqs = base ** (-torch.arange(0, per_axis, 2, dtype=torch.float32) / per_axis)
        angles = torch.cat([coords[:, a:a + 1].float() * freqs for a in range(n_axes)], -1)
        self.register_buffer("cos", angles.cos(), persistent=False)  # [S, head_dim / 2]
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [B, heads, S, head_dim], channel pairs (2i, 2i+1) turned by angle i."""
        if x.shape[-2] != self.cos.shape[0]:
            raise ConfigError(f"a sample has {x.shape[-2]} tokens but model.rope was built for the "
                              f"encoder's {self.cos.shape[0]}")
        even, odd = x[..., 0::2], x[..., 1::2]
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)


class Attention(nn.Module):
    """Multi-head self-attention on PyTorch SDPA, with an optional sigmoid output gate and
    optional rotary positions (``rotary``, applied to queries and keys)."""

    def __init__(self, d_model: int, n_heads: int, gated: bool = False, dropout: float = 0.0,
                 rotary: Rotary | None = None):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"model.d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.gate = nn.Linear(d_model, d_model, bias=False) if gated else None
        self.rotary = rotary

    def forward(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = (t.transpose(1, 2) for t in
                   self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).unbind(2))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        o = F.scaled_dot_product_attention(
            q, k, v,
            dropout_p=self.dropout if self.training else 0.0,
        )
        o = o.transpose(1, 2).reshape(b, s, d)
        if self.gate is not None:
            o = o * torch.sigmoid(self.gate(x))
        return self.out(o)


class MLP(nn.Module):
    """Position-wise feed-forward layer."""

    def __init__(self, d_model: int, ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(d_model * ratio)
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TokenMLP(nn.Module):
    """Token mixing by an MLP across positions instead of attention (TRM-MLP, MLP-Mixer): every
    channel of a token is a learned function of that channel at all ``seq_len`` positions, so
    the sequence length is fixed by the weights (grids of one size)."""

    def __init__(self, seq_len: int, ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.seq_len = int(seq_len)
        self.net = MLP(self.seq_len, ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.seq_len:
            raise ConfigError(f"a sample has {x.shape[1]} tokens but model.mixer=mlp was built for "
                              f"model.seq_len={self.seq_len}; use model.mixer=attention for other lengths")
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    """The one re-entrant step: pre-RMSNorm attention + MLP, each with a residual.

    ``mlp`` replaces the dense MLP; it maps [..., d] to [..., d], or to ``([..., d], routing)``
    for a ``moe.ExpertLibrary``, in which case the block returns ``(x, routing)`` too.
    ``mixer`` replaces the attention as the token-mixing sublayer (e.g. a ``TokenMLP``); it keeps
    the attribute name ``attn`` so that parameter names do not depend on the choice.
    """

    def __init__(
        self, d_model: int, n_heads: int, mlp_ratio: float = 4.0,
        gated_attention: bool = False, dropout: float = 0.0, mlp: nn.Module | None = None,
        mixer: nn.Module | None = None, rotary: Rotary | None = None,
    ):
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model)
        self.attn = mixer if mixer is not None else Attention(d_model, n_heads, gated_attention,
                                                              dropout, rotary)
        self.norm2 = nn.RMSNorm(d_model)
        self.mlp = mlp if mlp is not None else MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Routing]:
        x = x + self.attn(self.norm1(x))
        y = self.mlp(self.norm2(x))
        if isinstance(y, tuple):  # a routed MLP: its routing goes out beside the tokens
            return x + y[0], y[1]
        return x + y


class PairTokenEncoder(nn.Module):
    """Embeds a set of (key, value) symbol pairs plus a final query row, one token per row.

    One token per slot means a single attention hop can read a slot's value by matching its key,
    so one recursive step can follow one pointer. Keys and values share one symbol table (values
    pass through one learned projection), so "this value names that key" is known by construction
    instead of having to be learned symbol by symbol.
    """

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.symbol = nn.Embedding(vocab_size + 1, d_model)  # last id = padding
        self.value_proj = nn.Linear(d_model, d_model, bias=False)
        self.role = nn.Embedding(2, d_model)  # 0 = memory slot, 1 = query

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]  # [B, S, 2]
        role = torch.zeros(x.shape[1], dtype=torch.long, device=x.device)
        role[-1] = 1
        return self.symbol(x[..., 0]) + self.value_proj(self.symbol(x[..., 1])) + self.role(role)


SEQUENCE_EMBEDS = ("linear", "lookup")  # task.encoder.embed of SequenceTokenEncoder


class SequenceTokenEncoder(nn.Module):
    """Embeds a sequence of integer tokens, ``chunk`` consecutive ones per model token, with
    learned positions, plus a final query token that the class readout reads. Parity: entries
    0 / -1 / +1; ``chunk=8`` turns 64 entries into 8 tokens.

    ``embed`` says how a chunk becomes a vector. ``linear``: a linear map of its entries' one-hot
    codes, so a token is the sum of its entries' contributions (counts come for free, any
    function of the pattern needs the block). ``lookup``: one learned vector per pattern
    (``n_tokens ** chunk`` of them), so a token can carry any function of its pattern, parity
    included, from the first step.
    """

    MAX_PATTERNS = 1 << 16

    def __init__(self, n_tokens: int, seq_len: int, d_model: int, chunk: int = 1,
                 embed: str = "linear"):
        super().__init__()
        if chunk < 1 or seq_len % chunk:
            raise ConfigError(f"task.encoder.chunk={chunk} must be >= 1 and divide {seq_len}")
        if embed not in SEQUENCE_EMBEDS:
            raise ConfigError(f"task.encoder.embed={embed!r} must be one of: {', '.join(SEQUENCE_EMBEDS)}")
        if embed == "lookup" and n_tokens ** chunk > self.MAX_PATTERNS:
            raise ConfigError(
                f"task.encoder.embed=lookup with task.encoder.chunk={chunk} needs "
                f"{n_tokens}**{chunk} = {n_tokens ** chunk} patterns; at most {self.MAX_PATTERNS}"
                " are allowed (use a smaller chunk or embed=linear)")
        self.n_tokens, self.chunk, self.kind = n_tokens, chunk, embed
        if embed == "lookup":
            self.embed = nn.Embedding(n_tokens ** chunk, d_model)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.register_buffer("place", n_tokens ** torch.arange(chunk), persistent=False)
        else:
            self.embed = nn.Linear(chunk * n_tokens, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len // chunk, d_model) * 0.02)
        self.query = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        tokens = batch["x"]  # [B, L] in 0..n_tokens-1
        if self.kind == "lookup":
            x = self.embed((tokens.view(tokens.shape[0], -1, self.chunk) * self.place).sum(-1))
        else:
            codes = F.one_hot(tokens, self.n_tokens).float()  # [B, L, n_tokens]
            x = self.embed(codes.view(codes.shape[0], -1, self.chunk * self.n_tokens))
        x = x + self.pos
        return torch.cat([x, self.query.expand(x.shape[0], 1, -1)], dim=1)


class VectorEncoder(nn.Module):
    """Embeds a real vector one coordinate per token, plus the visible step count on every token.

    ``pos_std`` is the scale of the learned coordinate embeddings at initialisation. A rule that
    reads coordinate j into coordinate i must find j by position alone; at 0.02 the positions are
    a few percent of each normed token, and even a one-step fit of sparse_transform sits on a
    plateau until the attention finds the sources; at 1.0 they stand out from the start and are
    found far sooner (docs/results/sparse_transform.md).
    """

    def __init__(self, n_coords: int, d_model: int, max_count: int = 16, pos_std: float = 1.0):
        super().__init__()
        check_range("task.encoder.pos_std", pos_std, 0.0)
        self.value = nn.Linear(1, d_model)
        self.pos = nn.Parameter(torch.randn(n_coords, d_model) * float(pos_std))
        self.count = nn.Embedding(max_count + 1, d_model)  # 0 = hidden / unknown count
        self.max_count = max_count

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x, count = batch["x"], batch["count"]
        if count.numel() and int(count.max()) > self.max_count:
            raise ConfigError(
                f"a sample's visible count {int(count.max())} exceeds task.encoder.max_count="
                f"{self.max_count}; raise it to at least the task's largest count"
            )
        return self.value(x.unsqueeze(-1)) + self.pos + self.count(count)[:, None, :]


class ClassReadout(nn.Module):
    """Class logits read from one token (the query row by default)."""

    n_confidence = 2

    def __init__(self, d_model: int, n_classes: int, position: int = -1):
        super().__init__()
        self.position = position
        self.head = nn.Linear(d_model, n_classes)

    def pool(self, h: Tensor) -> Tensor:
        # a copy, not a view: a view would keep the whole [B, S, d] step output alive
        return h[:, self.position].contiguous()

    def forward(self, h: Tensor) -> Tensor:
        return self.head(self.pool(h))

    def confidence(self, logits: Tensor) -> Tensor:
        """[..., 2]: the top log-probability and the entropy of the predicted distribution."""
        logp = torch.log_softmax(logits.float(), -1)
        entropy = -(logp.exp() * logp).sum(-1)
        return torch.stack([logp.max(-1).values, entropy], -1).to(logits.dtype)


class VectorReadout(nn.Module):
    """One real value per coordinate token."""

    n_confidence = 0  # a point prediction carries no confidence

    def __init__(self, d_model: int):
        super().__init__()
        self.head = nn.Linear(d_model, 1)

    def pool(self, h: Tensor) -> Tensor:
        return h.mean(1)

    def forward(self, h: Tensor) -> Tensor:
        return self.head(h).squeeze(-1)

    def confidence(self, pred: Tensor) -> Tensor:
        return pred.new_zeros((*pred.shape[:-1], 0))


class GridTokenEncoder(nn.Module):
    """Embeds a grid of integer cells (``x``: [B, H*W] or [B, H, W]), one token per cell, with
    learned row and column embeddings (2-D positions: a cell knows its row and its column, which a
    flat position table would have to learn cell by cell), plus an optional per-puzzle embedding
    (``n_puzzles > 0``; ``batch['puzzle_id']``, TRM's puzzle identifiers) added to every cell.

    ``pos_std`` is the scale of the position embeddings at initialisation: at 0.02 they are a few
    percent of a normed token and attention cannot find a cell's row or column mates early on.
    """

    def __init__(self, n_tokens: int, height: int, width: int, d_model: int, pos_std: float = 1.0,
                 n_puzzles: int = 0):
        super().__init__()
        check_range("task.encoder.pos_std", pos_std, 0.0)
        for key, value in (("n_tokens", n_tokens), ("height", height), ("width", width)):
            if not is_positive_int(value):
                raise ConfigError(f"task.encoder.{key}={value!r} must be an integer >= 1")
        self.n_tokens, self.height, self.width = n_tokens, height, width
        self.seq_len = height * width  # tokens per sample (what model.mixer=mlp is built for)
        # each token's (row, column): what model.rope turns queries and keys by
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        self.coords = torch.stack([rows, cols], -1).reshape(-1, 2)
        self.token = nn.Embedding(n_tokens, d_model)
        self.row = nn.Parameter(torch.randn(height, 1, d_model) * float(pos_std))
        self.col = nn.Parameter(torch.randn(1, width, d_model) * float(pos_std))
        self.puzzle = nn.Embedding(n_puzzles, d_model) if n_puzzles > 0 else None
        if self.puzzle is not None:
            nn.init.zeros_(self.puzzle.weight)  # TRM starts its puzzle embeddings at zero too

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"].reshape(batch["x"].shape[0], -1)
        cells = self.height * self.width
        if x.shape[1] != cells:
            raise ConfigError(f"a sample has {x.shape[1]} cells but task.encoder is "
                              f"{self.height}x{self.width} = {cells}; set height and width to the grid's")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.n_tokens):
            raise ConfigError(f"a cell holds token {int(x.max())} outside 0..{self.n_tokens - 1}; "
                              "raise task.encoder.n_tokens to the task's vocabulary")
        h = self.token(x) + (self.row + self.col).reshape(cells, -1)
        if self.puzzle is not None:
            h = h + self.puzzle(batch["puzzle_id"])[:, None, :]
        return h


class CellReadout(nn.Module):
    """One class per cell (TRM's form): logits [B, L, n_classes] from every token.

    The halting head sees the mean over the cells (``pool``); its confidence input is that of
    the least sure cell (lowest top log-probability) and the mean entropy over cells, since a
    whole-grid answer is only as right as its worst cell.
    """

    n_confidence = 2

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.head = nn.Linear(d_model, n_classes)

    def pool(self, h: Tensor) -> Tensor:
        return h.mean(1)

    def forward(self, h: Tensor) -> Tensor:
        return self.head(h)

    def confidence(self, logits: Tensor) -> Tensor:
        """[..., 2] from logits [..., L, C]: min over cells of the top log-probability, mean entropy."""
        logp = torch.log_softmax(logits.float(), -1)
        entropy = -(logp.exp() * logp).sum(-1).mean(-1)
        return torch.stack([logp.max(-1).values.min(-1).values, entropy], -1).to(logits.dtype)
