"""The handler list of a training stage whose network is one model or a dict of models trained together (MMKD's
three teachers), each weight-averaged on its own."""

from __future__ import annotations

from typing import Any

from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, ValidationHandler, from_engine
from monai.utils import optional_import
from torch import nn

from monai_kd.handlers.weight_averaging import WeightAveraging

ProgressBar, _ = optional_import("ignite.handlers", name="ProgressBar")

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
    """:func:`~monai_kd.handlers.stage_handlers` with one SWA :class:`~monai_kd.handlers.WeightAveraging` per model.

    When ``network`` is an ``nn.ModuleDict`` (several models trained by one engine), each of its models is averaged
    into the model of the same name in ``averaged`` and recomputes its own BatchNorm statistics (a dict of models
    has no forward). The order is that of ``stage_handlers``: the averaging handler(s) (BatchNorm recomputed on at
    most ``bn_max_batches`` training batches), learning-rate schedule, validation, the epoch loss logged as
    ``<name>_loss``, progress bar and the checkpoint of ``averaged`` (``ckpt_dir/ckpt_name``).

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
    pairs = ([(network[k], averaged[k]) for k in network] if isinstance(network, nn.ModuleDict)
             else [(network, averaged)])
    return [
        *(WeightAveraging(net, avg, mode="swa", start_fraction=swa_start_fraction, bn_max_batches=bn_max_batches)
          for net, avg in pairs),
        LrScheduleHandler(lr_scheduler=lr_scheduler, print_lr=False),
        ValidationHandler(validator=validator, epoch_level=True, interval=val_interval),
        StatsHandler(tag_name=f"{name}_loss", output_transform=from_engine(["loss"], first=True), iteration_log=False),
        ProgressBar(persist=True, desc=name),
        CheckpointSaver(save_dir=ckpt_dir, save_dict={"model": averaged}, save_final=True,
                        final_filename=ckpt_name or f"{name}.pt", save_interval=0),
    ]
