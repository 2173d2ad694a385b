"""DynTRM: one weight-shared block applied up to T_max times, readable and haltable after every step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rds_act.errors import ConfigError, check_choice, check_range, is_positive_int
from rds_act.models.layers import Block, Rotary, TokenMLP
from rds_act.models.moe import ExpertLibrary, Routing

MIXERS = ("attention", "mlp")


@dataclass
class State:
    """Recurrent state: the hidden sequence ``h``, the input embedding ``inject`` re-added each
    step, and ``t``, the number of steps already taken (the same for every row). It holds what
    the next step needs and nothing else: a step's own outputs live on its ``StepOut``."""

    h: Tensor
    inject: Tensor
    t: int = 0

    def select(self, idx: Tensor) -> State:
        return State(self.h[idx], self.inject[idx], self.t)


@dataclass
class StepOut:
    """What one step produces; ``summary`` is the pooled state that readout and halt head see,
    ``routing`` what the expert library routed in the step (None for a dense block)."""

    state: State
    pred: Tensor
    halt_logits: Tensor  # [B, 2]: (halt, continue); most strategies use channel 0 only
    summary: Tensor
    routing: Routing | None = None


@dataclass
class Unrolled:
    """Per-step outputs stacked on a leading step axis (index 0 is step t=1).

    With an expert library (``num_experts > 0``), ``balance_loss`` is its load-balancing loss
    averaged over the steps, ``aux_loss`` that loss times ``balance_weight`` (the backbone's own
    term, which the LightningModule adds to any strategy's loss), ``expert_usage`` ``[steps, E]``
    each step's share of token-assignments per expert and ``router_entropy`` ``[steps, B]`` each
    row's mean router entropy per step; all None for a dense model.
    """

    preds: Tensor
    halt_logits: Tensor
    summaries: Tensor
    balance_loss: Tensor | None = None
    expert_usage: Tensor | None = None
    aux_loss: Tensor | None = None
    router_entropy: Tensor | None = None

    @property
    def steps(self) -> int:
        return self.preds.shape[0]

    def step(self, t: int) -> StepOut:
        """Step ``t`` (1-based) as a StepOut without recurrent state (its routing without the
        balance loss, which the unroll keeps only as the mean over steps)."""
        routing = None if self.router_entropy is None else Routing(
            None, self.expert_usage[t - 1], self.router_entropy[t - 1])
        return StepOut(None, self.preds[t - 1], self.halt_logits[t - 1], self.summaries[t - 1], routing)


def step_signal(t: int, d_model: int, device: torch.device | None = None) -> Tensor:
    """The Universal Transformer's timestep signal: sinusoids of the step number ``t`` (fixed,
    not learned, so steps beyond those trained still get a distinct, smoothly varying code)."""
    i = torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
    angle = float(t) / torch.pow(torch.tensor(10000.0, device=device), i / d_model)
    signal = torch.zeros(d_model, device=device)
    signal[0::2] = torch.sin(angle)
    signal[1::2] = torch.cos(angle[: d_model // 2])
    return signal


def select_rows(carry, idx: Tensor):
    """Index the batch rows of an exit rule's carry (None, a tensor, or a tuple of tensors)."""
    if carry is None:
        return None
    if isinstance(carry, Tensor):
        return carry[idx]
    return type(carry)(select_rows(c, idx) for c in carry)


class DynTRM(nn.Module):
    """Universal-transformer style recursion: ``h_t = f(h_{t-1} + inject(x))``.

    ``grad_steps=k`` backpropagates only through the last k of the unrolled steps (TRM-style);
    earlier steps run under ``no_grad`` so training memory stays flat in ``T_max``.

    ``halt_grad`` scales the gradient that the halting loss sends into the backbone (0: the loss
    trains the halting head only; 1: fully shared, TRM-style). Early in training the halting
    target (t*) is noise, and its full gradient through the shared state can stall a multi-hop
    algorithm the backbone is still learning (docs/results/rpc.md); a small share still lets the
    backbone learn features that tell when an answer is ready.
    ``halt_hidden=n`` gives the halting head one hidden layer of n units instead of a linear map.
    ``halt_confidence=True`` also shows the halting head how sure the readout is (for classes:
    the top log-probability and the entropy; the readout's ``confidence``), detached.
    ``compile=True`` compiles the shared block with ``torch.compile`` (the recursion's whole cost;
    the loop around it stays eager, as it exits per sample).
    ``step_signal=True`` adds the timestep signal of the step number to the block's input, so
    the shared block can act differently at different steps (e.g. apply a rule only while
    ``t <= c`` for a visible count c) and the halting head can see how far it has come.
    ``num_experts=E > 0`` swaps the block's MLP for an ``ExpertLibrary`` of E experts (``top_k``
    per token); since the block is shared, every step routes into the same library.
    ``balance_weight`` weights the library's load-balancing loss into ``Unrolled.aux_loss``,
    the backbone's own term that the LightningModule adds to the training loss.
    ``mixer='mlp'`` mixes tokens by an MLP across the ``seq_len`` positions instead of attention
    (TRM-MLP; one fixed length, which an encoder with a ``seq_len`` attribute supplies).
    ``rope=True`` turns queries and keys by the tokens' coordinates (rotary positions; 2-D, row
    and column, on grid tasks, whose encoders give each token's ``coords``), so attention can find
    a cell's neighbours by their offset wherever the cell lies, as TRM and HRM do.
    ``block_layers=n`` makes the one re-entrant block n attention + MLP layers deep (TRM's is 2);
    every step applies all n, still with the same weights at every step. On full RPC a one-layer
    step follows one pointer and sees that the value reached ends the chain only in the next
    step's failed lookup, so it exits a step after the chain length; a two-layer block sees it
    within the step and answers at the chain length, or before it where it learns pointer
    doubling (docs/results/rpc.md, Full RPC).
    """

    def __init__(
        self,
        encoder: nn.Module,
        readout: nn.Module,
        d_model: int = 64,
        n_heads: int = 4,
        mlp_ratio: float = 4.0,
        T_max: int = 8,
        grad_steps: int | None = None,
        gated_attention: bool = False,
        dropout: float = 0.0,
        state_norm: bool = True,
        activation_checkpointing: bool = False,
        halt_grad: float = 0.0,
        halt_hidden: int = 0,
        halt_confidence: bool = False,
        step_signal: bool = False,
        num_experts: int = 0,
        top_k: int = 2,
        balance_weight: float = 0.0,
        block_layers: int = 1,
        compile: bool = False,
        mixer: str = "attention",
        seq_len: int | None = None,
        rope: bool = False,
    ):
        super().__init__()
        if int(T_max) < 1:
            raise ConfigError(f"model.T_max={T_max} must be >= 1")
        if grad_steps is not None and int(grad_steps) < 1:
            raise ConfigError(f"model.grad_steps={grad_steps} must be >= 1 or null (all steps)")
        self.T_max, self.grad_steps = int(T_max), grad_steps
        self.encoder, self.readout = encoder, readout
        if int(num_experts) < 0:
            raise ConfigError(f"model.num_experts={num_experts} must be >= 0 (0 = a dense MLP)")
        check_range("model.balance_weight", balance_weight, 0.0)
        self.num_experts, self.balance_weight = int(num_experts), float(balance_weight)
        experts = (
            ExpertLibrary(d_model, num_experts, top_k, mlp_ratio, dropout) if self.num_experts else None
        )
        if not is_positive_int(block_layers):
            raise ConfigError(f"model.block_layers={block_layers} must be an integer >= 1")
        if block_layers > 1 and experts is not None:
            raise ConfigError(f"model.block_layers={block_layers} with model.num_experts={num_experts}: "
                              "the expert library is one layer per step; use block_layers=1")
        self.block_layers = int(block_layers)
        check_choice("model.mixer", mixer, MIXERS)
        if mixer == "mlp":
            seq_len = seq_len if seq_len is not None else getattr(encoder, "seq_len", None)
            if not is_positive_int(seq_len):
                raise ConfigError(f"model.mixer=mlp needs the fixed number of tokens per sample: "
                                  f"model.seq_len={seq_len!r}; allowed: an integer >= 1 (grid tasks "
                                  "set it from their encoder), or model.mixer=attention")
        rotary = self._rotary(encoder, d_model, n_heads, mixer) if rope else None
        layers = [Block(d_model, n_heads, mlp_ratio, gated_attention, dropout, mlp=experts,
                        mixer=TokenMLP(seq_len, mlp_ratio, dropout) if mixer == "mlp" else None,
                        rotary=rotary)
                  for _ in range(self.block_layers)]
        # one layer keeps its parameter names (block.attn...), so older checkpoints still load
        self.block = layers[0] if self.block_layers == 1 else nn.Sequential(*layers)
        self.h_init = nn.Parameter(torch.randn(d_model) * 0.02)
        self.state_norm = nn.RMSNorm(d_model) if state_norm else nn.Identity()
        self.out_norm = nn.RMSNorm(d_model)
        if int(halt_hidden) < 0:
            raise ConfigError(f"model.halt_hidden={halt_hidden} must be >= 0 (0 = a linear head)")
        self.halt_confidence = bool(halt_confidence)
        halt_dim = d_model + (readout.n_confidence if self.halt_confidence else 0)
        out = nn.Linear(int(halt_hidden) or halt_dim, 2)
        nn.init.zeros_(out.weight)
        nn.init.constant_(out.bias, -2.0)  # start out "keep thinking"
        self.halt_head = (
            nn.Sequential(nn.Linear(halt_dim, int(halt_hidden)), nn.GELU(), out) if halt_hidden else out
        )
        check_range("model.halt_grad", halt_grad, 0.0, 1.0)
        self.activation_checkpointing, self.halt_grad = activation_checkpointing, float(halt_grad)
        self.step_signal, self.d_model = bool(step_signal), int(d_model)
        if compile:  # in place: parameter names (and so checkpoints) stay those of the eager block
            self.block.compile(dynamic=None)

    @staticmethod
    def _rotary(encoder: nn.Module, d_model: int, n_heads: int, mixer: str) -> Rotary:
        """The rotary positions of ``rope=True``, shared by the block's layers (no parameters)."""
        if d_model % n_heads:
            raise ConfigError(f"model.d_model={d_model} must be divisible by n_heads={n_heads}")
        if mixer != "attention":
            raise ConfigError(f"model.rope=true turns attention's queries and keys; with "
                              f"model.mixer={mixer} there is no attention: use model.rope=false")
        coords = getattr(encoder, "coords", None)
        if coords is None:
            raise ConfigError(f"model.rope=true needs token coordinates, which "
                              f"{type(encoder).__name__} does not give (grid tasks' encoders do); "
                              "use model.rope=false")
        return Rotary(coords, d_model // n_heads)

    @property
    def block_applications(self) -> int:
        """Applications of the shared block (all its layers) per step: the unit of compute."""
        return 1

    @property
    def experts(self) -> ExpertLibrary | None:
        """The block's expert library (None for a dense MLP); one module, not a second copy."""
        mlp = getattr(self.block, "mlp", None)
        return mlp if isinstance(mlp, ExpertLibrary) else None

    def init_state(self, batch: dict[str, Tensor]) -> State:
        inject = self.encoder(batch)
        return State(self.h_init.expand_as(inject), inject)

    def _block(self, x: Tensor) -> Tensor:
        """The shared block on ``x``, its routing (if any) dropped; ``_routed`` returns both."""
        h, _ = self._routed(x)
        return h

    def _routed(self, x: Tensor) -> tuple[Tensor, Routing | None]:
        if self.activation_checkpointing and torch.is_grad_enabled():
            out = checkpoint(self.block, x, use_reentrant=False)
        else:
            out = self.block(x)
        return out if isinstance(out, tuple) else (out, None)

    def step(self, state: State) -> StepOut:
        """One recursive step; the input lives in ``state.inject``."""
        advanced = self.advance(state)
        if not isinstance(advanced, tuple):  # a subclass written for a State-only advance
            raise ConfigError(f"{type(self).__name__}.advance returned {type(advanced).__name__}; "
                              "allowed: a tuple (next State, routing or None)")
        nxt, routing = advanced
        out = self.read(nxt)
        out.routing = routing
        return out

    def advance(self, state: State) -> tuple[State, Routing | None]:
        """The recursion alone: the next state and what the expert library routed on the way
        (None for a dense block). A backbone with other latents overrides it."""
        x = state.h + state.inject
        if self.step_signal:
            x = x + step_signal(state.t + 1, self.d_model, x.device).to(x.dtype)
        h, routing = self._routed(x)
        return State(self.state_norm(h), state.inject, state.t + 1), routing

    def read(self, state: State) -> StepOut:
        """Readout and halting head on a state's ``h`` (the answer a step has reached)."""
        out = self.out_norm(state.h)
        summary = self.readout.pool(out)
        halt_in = summary.detach()
        if self.halt_grad > 0:  # value unchanged, gradient scaled by halt_grad
            halt_in = halt_in + self.halt_grad * (summary - halt_in)
        pred = self.readout(out)
        if self.halt_confidence:  # how sure the readout is: a feature the head cannot compute
            halt_in = torch.cat([halt_in, self.readout.confidence(pred.detach())], -1)
        return StepOut(state, pred, self.halt_head(halt_in), summary)

    def unroll(self, batch: dict[str, Tensor], steps: int | None = None) -> Unrolled:
        """Run every sample for ``steps`` (default ``T_max``) steps and stack the outputs."""
        steps = self.T_max if steps is None else int(steps)
        if steps < 1:
            raise ConfigError(f"steps={steps} must be >= 1")
        no_grad_until = 0 if self.grad_steps is None else max(0, steps - int(self.grad_steps))
        state, outs = self.init_state(batch), []
        for t in range(1, steps + 1):
            with torch.set_grad_enabled(torch.is_grad_enabled() and t > no_grad_until):
                out = self.step(state)
            state = out.state
            outs.append(dataclasses.replace(out, state=None))  # the stack needs no states
        return self.stacked(outs)

    def stacked(self, outs: list[StepOut]) -> Unrolled:
        """Steps' outputs on a leading step axis, with the expert library's balance loss (the
        mean over the steps) and ``aux_loss`` (times ``balance_weight``) where it routed."""
        unrolled = Unrolled(torch.stack([o.pred for o in outs]), torch.stack([o.halt_logits for o in outs]),
                            torch.stack([o.summary for o in outs]))
        routed = [o.routing for o in outs if o.routing is not None]
        if routed:
            unrolled.balance_loss = torch.stack([r.balance_loss for r in routed]).mean()
            unrolled.expert_usage = torch.stack([r.usage for r in routed])
            unrolled.router_entropy = torch.stack([r.entropy for r in routed])
            unrolled.aux_loss = self.balance_weight * unrolled.balance_loss
        return unrolled

    @torch.no_grad()
    def adaptive_forward(
        self, batch: dict[str, Tensor], exit_rule: Callable, steps: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-sample halting that saves compute: each step runs only the samples still active.

        Returns ``(pred_at_exit, exit_step)`` where ``exit_step`` is 1-based. ``exit_rule`` is
        called as ``rule(step_out, t, carry) -> (halt[B_active], carry)`` on the active rows only;
        ``carry`` is ``None`` or a tensor whose first axis follows the active rows.
        """
        steps = self.T_max if steps is None else int(steps)
        state = self.init_state(batch)
        n = state.h.shape[0]
        active = torch.arange(n, device=state.h.device)
        exit_step = torch.full((n,), steps, dtype=torch.long, device=state.h.device)
        pred_out, carry = None, None
        for t in range(1, steps + 1):
            out = self.step(state)
            if pred_out is None:
                pred_out = out.pred.new_zeros((n, *out.pred.shape[1:]))
            halt, carry = exit_rule(out, t, carry)
            halt = halt if t < steps else torch.ones_like(halt)
            done = active[halt]
            pred_out[done] = out.pred[halt]
            exit_step[done] = t
            keep = ~halt
            if not keep.any():
                break
            active, state = active[keep], out.state.select(keep)
            carry = select_rows(carry, keep)
        return pred_out, exit_step
