"""Load pretrained weights into a network when an engine starts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from monai.utils import optional_import
from torch import nn

from monai_kd.networks.pretrained import load_pretrained

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")


class PretrainedLoader:
    """On ``STARTED``, load ``checkpoint`` into ``network`` with :func:`monai_kd.networks.load_pretrained`.

    Unlike MONAI's ``CheckpointLoader`` it fails with a one-line message that names the file and what does not
    fit (missing file, other class count, other layer names), and it is meant for frozen networks such as the
    teachers of a distillation stage: building the trainer does not need the file, running it does.

    Args:
        network: module to fill (a ``DistributedDataParallel`` wrapper is unwrapped).
        checkpoint: path of the ``.pt`` file (plain state dict or ``CheckpointSaver`` output).
        key: entry of a checkpoint dict holding the state dict; default ``"model"``/``"network"``/the only entry.
    """

    def __init__(self, network: nn.Module, checkpoint: str | os.PathLike, key: str | None = None) -> None:
        self.network = network
        self.checkpoint = checkpoint
        self.key = key

    def attach(self, engine: Engine) -> None:
        """Load the weights when ``engine`` starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Load the checkpoint onto the engine's device."""
        load_pretrained(self.network, self.checkpoint, key=self.key, map_location=str(engine.state.device))
