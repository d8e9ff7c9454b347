"""The handler list every training stage of a bundle attaches, built once instead of written out per stage."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, ValidationHandler, from_engine
from monai.utils import optional_import
from torch import nn

from monai_kd.handlers.distillation_stats import DistillationStatsHandler
from monai_kd.handlers.weight_averaging import WeightAveraging

ProgressBar, _ = optional_import("ignite.handlers", name="ProgressBar")

__all__ = ["stage_handlers"]


def stage_handlers(
    name: str,
    network: nn.Module,
    averaged: nn.Module,
    lr_scheduler: Any,
    validator: Any,
    ckpt_dir: str,
    swa_start_fraction: float = 0.5,
    val_interval: int = 1,
    bn_loaders: Iterable | Sequence[Iterable] | None = None,
    log_dir: str | None = None,
    log_interval: int = 20,
    scalar_keys: Sequence[str] | None = None,
    ckpt_name: str | None = None,
    bn_max_batches: int | None = None,
) -> list:
    """Handlers of one training stage, in the order they must attach.

    1. :class:`~monai_kd.handlers.WeightAveraging` (SWA of ``network`` into ``averaged`` from ``swa_start_fraction``
       of the epochs on; BatchNorm statistics recomputed on ``bn_loaders``) -- before anything reads ``averaged``.
       When ``network`` is an ``nn.ModuleDict`` (several models trained by one engine, as MMKD's teachers), each of
       its models is averaged into the model of the same name in ``averaged`` by its own handler (a dict of models
       has no forward, so each recomputes its own BatchNorm statistics);
    2. MONAI's ``LrScheduleHandler`` (no printing) and ``ValidationHandler`` (``validator`` every ``val_interval``
       epochs);
    3. a ``StatsHandler`` logging the epoch loss as ``<name>_loss`` (logger ``name``);
    4. with ``log_dir``: a :class:`~monai_kd.handlers.DistillationStatsHandler` writing ``log_dir/<name>`` every
       ``log_interval`` iterations (``scalar_keys``: extra engine outputs to log);
    5. an ignite ``ProgressBar`` labelled ``name``;
    6. a ``CheckpointSaver`` writing ``averaged`` as ``ckpt_dir/<ckpt_name or name.pt>`` when training ends.

    Args:
        name: the stage's name (logger, progress bar, log folder, checkpoint name).
        network: the network being trained.
        averaged: its weight average (validated and saved).
        lr_scheduler: the stage's learning-rate scheduler.
        validator: the stage's evaluator.
        ckpt_dir: checkpoint folder.
        swa_start_fraction: fraction of the epochs after which weights are averaged.
        val_interval: validation every this many epochs.
        bn_loaders: loaders for the BatchNorm recomputation (default: the engine's).
        log_dir: folder of the per-iteration logs; ``None``: no per-iteration log.
        log_interval: iterations between per-iteration log entries.
        scalar_keys: engine outputs logged besides the losses.
        ckpt_name: checkpoint file name; default ``<name>.pt``.
        bn_max_batches: at most this many training batches per BatchNorm recomputation (``None``: all).
    """
    pairs = ([(network[k], averaged[k]) for k in network] if isinstance(network, nn.ModuleDict)
             else [(network, averaged)])
    handlers: list = [
        *(WeightAveraging(net, avg, mode="swa", bn_loaders=bn_loaders, start_fraction=swa_start_fraction,
                          bn_max_batches=bn_max_batches) for net, avg in pairs),
        LrScheduleHandler(lr_scheduler=lr_scheduler, print_lr=False),
        ValidationHandler(validator=validator, epoch_level=True, interval=val_interval),
        StatsHandler(name=name, tag_name=f"{name}_loss", output_transform=from_engine(["loss"], first=True),
                     iteration_log=False),
    ]
    if log_dir is not None:
        handlers.append(DistillationStatsHandler(interval=log_interval, logger_name=name,
                                                 log_dir=os.path.join(log_dir, name), scalar_keys=scalar_keys))
    handlers += [
        ProgressBar(persist=True, desc=name),
        CheckpointSaver(save_dir=ckpt_dir, save_dict={"model": averaged}, save_final=True,
                        final_filename=ckpt_name or f"{name}.pt", save_interval=0),
    ]
    return handlers
