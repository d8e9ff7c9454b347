# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Check the first training batch against the network's first layer before anything runs on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import
from monai.utils.enums import CommonKeys as Keys
from torch import nn

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["BatchShapeCheck", "BatchShapeError"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class BatchShapeError(ValueError):
    """The training images do not have the dimensionality or channel count the network takes."""


def first_convolution(network: nn.Module) -> nn.Conv1d | nn.Conv2d | nn.Conv3d | None:
    """The first convolution of ``network`` in registration order (``None`` without one)."""
    return next((m for m in network.modules() if isinstance(m, _CONVS)), None)


class BatchShapeCheck:
    """Refuse, in one line, a first batch whose images are 2D for a 3D network (or back) or have other channels.

    Without it a 3D volume reaching a 2D network fails deep inside ``conv2d`` with a shape traceback. The check
    reads the network's first convolution (``Conv{1,2,3}d``: spatial dimensions and ``in_channels``) and the batch's
    ``image`` (dict batches) or first element, once, at the first ``GET_BATCH_COMPLETED`` of a run.

    Args:
        stage: the stage's name in messages.
        image_key: key of the images in dict batches.
    """

    def __init__(self, stage: str = "training", image_key: str = Keys.IMAGE) -> None:
        self.stage = stage
        self.image_key = image_key
        self._checked = False

    def attach(self, engine: Engine) -> None:
        """Check at the first ``GET_BATCH_COMPLETED`` of each run."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._checked = False

    def __call__(self, engine: Engine) -> None:
        if self._checked:
            return
        self._checked = True
        batch: Any = engine.state.batch
        images = batch.get(self.image_key) if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
        conv = first_convolution(engine.network)
        if not isinstance(images, torch.Tensor) or conv is None:
            return
        dims = len(conv.kernel_size)
        shape = tuple(images.shape[1:])  # one image, channel first
        where = f"stage '{self.stage}': the training '{self.image_key}' batches"
        if images.ndim - 2 != dims:
            raise BatchShapeError(
                f"{where} hold {images.ndim - 2}D images of shape {shape} (channel first) but the network is"
                f" {dims}D ({type(conv).__name__} first): check --dataset_dir / the datalist and the bundle's"
                " spatial_dims."
            )
        if shape[0] != conv.in_channels:
            raise BatchShapeError(
                f"{where} have {shape[0]} channel(s) (shape {shape}) but the network's first layer takes"
                f" {conv.in_channels}: check the data (grey vs RGB) or the network's input channels."
            )
