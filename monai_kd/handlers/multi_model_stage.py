"""The handler list of a training stage whose network is one model or a dict of models trained together (MMKD's
three teachers), each weight-averaged on its own: :func:`~monai_kd.handlers.stage_handlers`, under the name the
mmkd configs use."""

from __future__ import annotations

from typing import Any

from torch import nn

from monai_kd.handlers.stage import stage_handlers

__all__ = ["averaged_stage_handlers"]


def averaged_stage_handlers(
    name: str,
    network: nn.Module,
    averaged: nn.Module,
    lr_scheduler: Any,
    validator: Any,
    ckpt_dir: str,
    ckpt_name: str | None = None,
    swa_start_fraction: float = 0.5,
    bn_max_batches: int | None = None,
    val_interval: int = 1,
) -> list:
    """:func:`~monai_kd.handlers.stage_handlers` without per-iteration logs: one SWA
    :class:`~monai_kd.handlers.WeightAveraging` per model of an ``nn.ModuleDict`` ``network``, then the learning-rate
    schedule, validation, the epoch loss, progress bar and the checkpoint of ``averaged``.

    Args:
        name: the stage's name (logger, progress bar, checkpoint name by default).
        network: the network, or ``nn.ModuleDict`` of networks, being trained.
        averaged: its weight average (same structure; validated and saved).
        lr_scheduler: the stage's learning-rate scheduler.
        validator: the stage's evaluator.
        ckpt_dir: checkpoint folder.
        ckpt_name: checkpoint file name; default ``<name>.pt``.
        swa_start_fraction: fraction of the epochs after which weights are averaged.
        bn_max_batches: at most this many training batches for each BatchNorm recomputation (``None``: all).
        val_interval: validation every this many epochs.
    """
    return stage_handlers(name, network, averaged, lr_scheduler, validator, ckpt_dir,
                          swa_start_fraction=swa_start_fraction, val_interval=val_interval, ckpt_name=ckpt_name,
                          bn_max_batches=bn_max_batches)
