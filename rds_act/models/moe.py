"""ExpertLibrary: a routed mixture-of-experts MLP for the recursive block. Because the block is
shared, its experts are one library that every recursive step revisits, not per-layer copies."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rds_act.errors import ConfigError
from rds_act.models.layers import MLP


@dataclass
class Routing:
    """What one pass through the library routed: the Switch/GShard load-balancing loss
    ``E * sum_e f_e * P_e`` (``f_e``: share of token-assignments to expert e, ``P_e``: mean
    router probability; 1 when routing is uniform, up to E when it collapses) and ``usage`` the
    shares ``f_e`` (detached, sums to 1); ``entropy`` ``[B]`` each row's mean router entropy
    over its tokens (nats, detached; 0 when every token is sure of its expert, ln E when the router
    cannot choose): how sparse the row's routing is, a confidence signal for an exit rule.
    Returned with the output, not kept on the module, so a recomputed (checkpointed) or compiled
    pass leaves no state behind. ``balance_loss`` is None on a step read back from an unroll."""

    balance_loss: Tensor | None
    usage: Tensor
    entropy: Tensor


class ExpertLibrary(nn.Module):
    """Each token goes to its ``top_k`` experts (each shaped like ``layers.MLP``), weighted by its
    router probabilities renormalised over those k.

    There is no capacity limit: a token always reaches its k experts whatever else is in the
    batch, so its output depends on that token alone and ``adaptive_forward``'s shrinking
    batches give what the full batch gives (up to rounding).

    ``forward`` returns the mixed tokens and the pass's ``Routing``.
    """

    def __init__(
        self, d_model: int, num_experts: int, top_k: int = 1, mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if int(num_experts) < 1:
            raise ConfigError(f"model.num_experts={num_experts} must be >= 1 for an expert library")
        if not 1 <= int(top_k) <= int(num_experts):
            bound = ">= 1" if int(top_k) < 1 else f"<= model.num_experts={num_experts}"
            raise ConfigError(f"model.top_k={top_k} must be {bound}")
        self.num_experts, self.top_k = int(num_experts), int(top_k)
        self.router = nn.Linear(d_model, self.num_experts)
        self.experts = nn.ModuleList(MLP(d_model, mlp_ratio, dropout) for _ in range(self.num_experts))

    def route(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``tokens [N, d]`` -> router probabilities ``[N, E]``, the chosen experts ``[N, k]``
        and their weights ``[N, k]`` (float32, whatever the input dtype): renormalised over the k
        for k > 1; for k = 1 the router probability itself (as in the Switch Transformer), since a
        renormalised single weight is exactly 1 and the task loss would never reach the router."""
        probs = torch.softmax(self.router(tokens).float(), -1)
        weight, expert = probs.topk(self.top_k, -1)
        if self.top_k == 1:
            return probs, expert, weight
        return probs, expert, weight / weight.sum(-1, keepdim=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        tokens = x.reshape(-1, x.shape[-1])
        probs, expert, weight = self.route(tokens)
        out = torch.zeros_like(tokens)
        for e, mlp in enumerate(self.experts):
            # every expert runs, on zero rows if none chose it: all parameters stay in the graph (DDP)
            rows, slot = (expert == e).nonzero(as_tuple=True)
            y = mlp(tokens.index_select(0, rows)) * weight[rows, slot, None]
            out.index_add_(0, rows, y.to(out.dtype))
        share = F.one_hot(expert, self.num_experts).float().sum(1).mean(0) / self.top_k  # f_e
        balance = self.num_experts * (share * probs.mean(0)).sum()
        with torch.no_grad():
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
            entropy = entropy.view(x.shape[0], -1).mean(1)
        return out.view_as(x), Routing(balance, share.detach(), entropy)
