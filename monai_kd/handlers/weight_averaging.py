"""Average a network's weights over late training (SWA or EMA) into a second copy of the network."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import
from torch import nn

from monai_kd.networks.wrappers import unwrap_module

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["WeightAveraging", "has_batch_norm", "recompute_batch_norm"]

_BN = nn.modules.batchnorm._BatchNorm


def has_batch_norm(network: nn.Module) -> bool:
    """Whether ``network`` has a BatchNorm layer that tracks running statistics."""
    return any(isinstance(m, _BN) and m.track_running_stats for m in network.modules())


def _images(batch: Any, image_key: str) -> torch.Tensor:
    """The image tensor of a batch: ``batch[image_key]`` for dicts, the first element of tuples, else the batch."""
    if isinstance(batch, dict):
        if image_key not in batch:
            raise KeyError(f"recompute_batch_norm: batch has no '{image_key}' key; keys: {sorted(batch)}.")
        return batch[image_key]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


@torch.no_grad()
def recompute_batch_norm(
    network: nn.Module,
    loaders: Iterable | Sequence[Iterable],
    device: str | torch.device | None = None,
    image_key: str | Sequence[str] = "image",
    max_batches: int | None = None,
) -> int:
    """Recompute the running statistics of every BatchNorm layer of ``network`` from data.

    An averaged network (SWA, EMA) has weights no epoch ever had, so the BatchNorm running mean and variance of
    any epoch, or their average, are not the statistics of *its* activations. As
    :func:`torch.optim.swa_utils.update_bn` does, this resets them and runs the network in train mode over the
    data with ``momentum=None`` (a cumulative average over batches), then restores momentum and the train/eval
    mode. Unlike ``update_bn`` it reads MONAI dict batches (``batch[image_key]``) and several loaders (e.g. source
    and target domains, whose mixture the network saw in training).

    Args:
        network: the network whose BatchNorm statistics are recomputed (in place).
        loaders: a sequence (list or tuple) of iterables of batches, or one iterable that is not a list or tuple
            (e.g. a ``DataLoader``); batches are dicts with ``image_key``, tuples (image first) or tensors.
        device: device the images are moved to; default the device of the network's first parameter.
        image_key: key of the image in dict batches, or one key per loader (e.g. ``["image", "image_weak"]``).
        max_batches: stop each loader after this many batches (``None``: all).

    Returns:
        the number of batches forwarded (0 when the network has no BatchNorm layer: nothing to do).

    Raises:
        ValueError: the network has BatchNorm layers but the loaders yield no batch.
    """
    layers = [m for m in network.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers:
        return 0
    if device is None:
        param = next(network.parameters(), None)
        device = param.device if param is not None else "cpu"
    momenta = {}
    for layer in layers:
        layer.reset_running_stats()
        momenta[layer] = layer.momentum
        layer.momentum = None  # cumulative moving average over the batches below
    was_training = network.training
    network.train()
    count = 0
    loader_list = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    keys = [image_key] * len(loader_list) if isinstance(image_key, str) else list(image_key)
    if len(keys) != len(loader_list):
        raise ValueError(f"recompute_batch_norm: {len(keys)} image keys for {len(loader_list)} loaders.")
    try:
        for loader, key in zip(loader_list, keys):
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                images = _images(batch, key)
                network(torch.as_tensor(images).to(device))
                count += 1
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        network.train(was_training)
    if count == 0:
        raise ValueError("recompute_batch_norm: the data loaders yielded no batch, so BatchNorm cannot be recomputed.")
    return count


class WeightAveraging:
    """Keep ``averaged`` as a running average of ``network``'s weights, to damp checkpoint noise.

    ``mode="swa"``: equal-weight mean of the weights at the end of every epoch from ``start_epoch`` on
    (stochastic weight averaging, Izmailov et al. 2018). ``mode="ema"``: exponential moving average updated
    every iteration from ``start_epoch`` on, ``avg = decay * avg + (1 - decay) * w``. Before ``start_epoch``
    ``averaged`` simply follows ``network``. ``averaged`` is an ordinary module of the same architecture, so
    validation, checkpointing and export can use it directly.

    BatchNorm: running statistics are **not** averaged. The mean of per-epoch running variances is not the
    variance of the averaged network's activations (one BatchNorm layer after a weight of 1 then 3 on inputs
    [1, 2, 3]: averaged variance 5, true variance 4). At every epoch end from ``start_epoch`` on, the statistics
    of ``averaged`` are recomputed from training data (:func:`recompute_batch_norm`) before anything (validation,
    a checkpoint, export) reads it; attach this handler before the validation and checkpoint handlers. The data
    are ``bn_loaders`` or, by default, the engine's own ``data_loader`` (the bundle's training transforms).
    Integer buffers are copied.

    Args:
        network: the network being trained.
        averaged: a module of the same architecture that receives the average (its own weights are overwritten).
        mode: ``"swa"`` or ``"ema"``.
        start_epoch: first epoch (1-based) whose weights enter the average.
        start_fraction: instead of ``start_epoch``: start after this fraction of the engine's ``max_epochs``,
            ``start_epoch = int(max_epochs * start_fraction) + 1`` (set when the handler is attached).
        decay: EMA decay, used with ``mode="ema"``.
        bn_loaders: loader(s) of training batches for the BatchNorm recomputation; ``None`` uses the engine's
            ``data_loader``. Give the source and the target loader of a domain-adversarial network, which saw both.
        bn_max_batches: at most this many batches per loader for the recomputation (``None``: all).
        image_key: key of the image in dict batches, or one key per loader of ``bn_loaders``.
    """

    def __init__(
        self,
        network: nn.Module,
        averaged: nn.Module,
        mode: str = "swa",
        start_epoch: int = 1,
        decay: float = 0.99,
        bn_loaders: Iterable | Sequence[Iterable] | None = None,
        bn_max_batches: int | None = None,
        image_key: str | Sequence[str] = "image",
        start_fraction: float | None = None,
    ) -> None:
        if start_fraction is not None and not 0.0 <= start_fraction <= 1.0:
            raise ValueError(f"start_fraction must be in [0, 1], got {start_fraction}.")
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
        self.start_fraction = start_fraction
        self.decay = decay
        self.bn_loaders = bn_loaders
        self.bn_max_batches = bn_max_batches
        self.image_key = image_key
        self.num_averaged = 0
        self._bn_buffers = {
            f"{name}.{buf}"
            for name, module in averaged.named_modules()
            if isinstance(module, _BN)
            for buf in ("running_mean", "running_var")
        }

    def attach(self, engine: Engine) -> None:
        """Register the update on the engine's iteration (EMA) or epoch (SWA) completion, then BatchNorm recomputation."""
        self._set_start(engine)
        event = Events.ITERATION_COMPLETED if self.mode == "ema" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.update_batch_norm)
        engine.add_event_handler(Events.STARTED, self._reset)

    def _set_start(self, engine: Engine) -> None:
        """``start_epoch`` from ``start_fraction`` and the engine's ``max_epochs`` (known at attach or at the start)."""
        if self.start_fraction is not None and engine.state.max_epochs is not None:
            self.start_epoch = int(engine.state.max_epochs * self.start_fraction) + 1

    def _reset(self, engine: Engine) -> None:
        self._set_start(engine)
        if engine.state.epoch < self.start_epoch:
            self.num_averaged = 0
            self.averaged.load_state_dict(self.network.state_dict())

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        """Fold the current weights of ``network`` into ``averaged`` (BatchNorm statistics excepted)."""
        if engine.state.epoch < self.start_epoch:
            self.averaged.load_state_dict(self.network.state_dict())
            return
        if self.mode == "ema":
            keep = self.decay if self.num_averaged > 0 else 0.0
        else:
            keep = self.num_averaged / (self.num_averaged + 1)
        dst = self.averaged.state_dict()
        for name, value in self.network.state_dict().items():
            if name in self._bn_buffers:
                continue  # recomputed from data in update_batch_norm
            if value.is_floating_point():
                dst[name].mul_(keep).add_(value.detach().to(dst[name].device), alpha=1.0 - keep)
            else:
                dst[name].copy_(value)
        self.num_averaged += 1

    def update_batch_norm(self, engine: Engine) -> None:
        """Recompute the BatchNorm statistics of ``averaged`` from training data once it holds an average."""
        if self.num_averaged == 0 or not has_batch_norm(self.averaged):
            return
        loaders = self.bn_loaders if self.bn_loaders is not None else [engine.state.dataloader]
        recompute_batch_norm(self.averaged, loaders, None, self.image_key, self.bn_max_batches)
