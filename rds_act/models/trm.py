"""TRM's recursion (Jolicoeur-Martineau 2025) as a backbone beside DynTRM: two latents, the
answer ``y`` and a reasoning state ``z``, refined by one shared block.

One step of the strategies is one TRM supervision step: ``cycles`` times, ``n_latent`` updates
``z <- f(z + y + x)`` then one ``y <- f(y + z)``, the first ``cycles - 1`` under ``no_grad``, so
the gradient of a step reaches only its last cycle (TRM's deep recursion at the memory of one).
Readout and halting head read ``y`` after every step, as DynTRM's read ``h``; encoders, readouts,
halting heads, exit rules, compaction and every strategy are shared.

With ``cycles >= 2`` no gradient crosses from one step into the previous one, as in TRM, which
detaches its latents between supervision steps; with ``cycles=1`` under ``training=unroll`` it
does (a Universal-Transformer unroll of the pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rds_act.errors import ConfigError, is_positive_int
from rds_act.models.dyntrm import DynTRM, State


@dataclass
class TRMState(State):
    """DynTRM's state with TRM's second latent: ``h`` is the answer ``y``, ``z`` the reasoning."""

    z: Tensor | None = None

    def select(self, idx: Tensor) -> TRMState:
        return TRMState(self.h[idx], self.inject[idx], self.t, z=self.z[idx])


def _positive_int(name: str, value: object) -> int:
    if not is_positive_int(value):
        raise ConfigError(f"model.{name}={value!r} is not allowed; allowed: an integer >= 1")
    return int(value)


class TRM(DynTRM):
    """TRM: ``n_latent`` (TRM's n) latent updates per answer update, ``cycles`` (TRM's T) per
    step, ``block_layers`` (TRM: 2) layers in the one shared block, token mixing by attention or
    by an MLP over positions (``mixer='mlp'``, TRM-MLP). The initial latents are fixed random
    vectors (std 1), as TRM's, not learned. Options of DynTRM that belong to its one-latent
    recursion (step signal, grad_steps, expert library) are not offered.
    """

    def __init__(self, encoder: nn.Module, readout: nn.Module, n_latent: int = 6, cycles: int = 3,
                 block_layers: int = 2, **kwargs):
        for key in ("step_signal", "grad_steps", "num_experts", "top_k", "balance_weight"):
            if key in kwargs:
                raise ConfigError(f"model.{key} is a DynTRM option that model=trm does not offer")
        super().__init__(encoder, readout, block_layers=block_layers, **kwargs)
        self.n_latent, self.cycles = _positive_int("n_latent", n_latent), _positive_int("cycles", cycles)
        del self.h_init
        self.register_buffer("y_init", torch.randn(self.d_model))
        self.register_buffer("z_init", torch.randn(self.d_model))

    @property
    def block_applications(self) -> int:
        """Applications of the shared block per step (compute, in TRM's unit)."""
        return self.cycles * (self.n_latent + 1)

    def init_state(self, batch: dict[str, Tensor]) -> TRMState:
        inject = self.encoder(batch)
        return TRMState(self.y_init.expand_as(inject), inject, 0, z=self.z_init.expand_as(inject))

    def _update(self, x: Tensor) -> Tensor:
        return self.state_norm(self._block(x))

    def _cycle(self, y: Tensor, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        for _ in range(self.n_latent):
            z = self._update(z + y + x)
        return self._update(y + z), z

    def advance(self, state: TRMState) -> tuple[TRMState, None]:
        y, z, x = state.h, state.z, state.inject
        with torch.no_grad():
            for _ in range(self.cycles - 1):
                y, z = self._cycle(y, z, x)
        y, z = self._cycle(y, z, x)
        return TRMState(y, x, state.t + 1, z=z), None  # no expert library: nothing routed
