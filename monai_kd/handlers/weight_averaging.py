"""Average a network's weights over late training (SWA or EMA) into a second copy of the network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from monai.utils import optional_import
from torch import nn

from monai_kd.networks.wrappers import unwrap_module

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")


class WeightAveraging:
    """Keep ``averaged`` as a running average of ``network``'s weights, to damp checkpoint noise.

    ``mode="swa"``: equal-weight mean of the weights at the end of every epoch from ``start_epoch`` on
    (stochastic weight averaging, Izmailov et al. 2018). ``mode="ema"``: exponential moving average updated
    every iteration from ``start_epoch`` on, ``avg = decay * avg + (1 - decay) * w``. Before ``start_epoch``
    ``averaged`` simply follows ``network``. Floating-point buffers (BatchNorm running statistics) are averaged
    the same way, integer buffers copied. ``averaged`` is an ordinary module of the same architecture, so
    validation, checkpointing and export can use it directly.

    Args:
        network: the network being trained.
        averaged: a module of the same architecture that receives the average (its own weights are overwritten).
        mode: ``"swa"`` or ``"ema"``.
        start_epoch: first epoch (1-based) whose weights enter the average.
        decay: EMA decay, used with ``mode="ema"``.
    """

    def __init__(
        self, network: nn.Module, averaged: nn.Module, mode: str = "swa", start_epoch: int = 1, decay: float = 0.99
    ) -> None:
        if mode not in ("swa", "ema"):
            raise ValueError(f'mode must be "swa" or "ema", got "{mode}".')
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}.")
        network = unwrap_module(network)  # average the wrapped module of (Distributed)DataParallel
        src, dst = network.state_dict(), averaged.state_dict()
        if src.keys() != dst.keys() or any(src[k].shape != dst[k].shape for k in src):
            raise ValueError("WeightAveraging: `averaged` must have the same architecture as `network`.")
        self.network = network
        self.averaged = averaged
        self.mode = mode
        self.start_epoch = start_epoch
        self.decay = decay
        self.num_averaged = 0

    def attach(self, engine: Engine) -> None:
        """Register the update on the engine's iteration (EMA) or epoch (SWA) completion."""
        event = Events.ITERATION_COMPLETED if self.mode == "ema" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self)
        engine.add_event_handler(Events.STARTED, self._reset)

    def _reset(self, engine: Engine) -> None:
        if engine.state.epoch < self.start_epoch:
            self.num_averaged = 0
            self.averaged.load_state_dict(self.network.state_dict())

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        """Fold the current weights of ``network`` into ``averaged``."""
        if engine.state.epoch < self.start_epoch:
            self.averaged.load_state_dict(self.network.state_dict())
            return
        if self.mode == "ema":
            keep = self.decay if self.num_averaged > 0 else 0.0
        else:
            keep = self.num_averaged / (self.num_averaged + 1)
        dst = self.averaged.state_dict()
        for name, value in self.network.state_dict().items():
            if value.is_floating_point():
                dst[name].mul_(keep).add_(value.detach().to(dst[name].device), alpha=1.0 - keep)
            else:
                dst[name].copy_(value)
        self.num_averaged += 1
