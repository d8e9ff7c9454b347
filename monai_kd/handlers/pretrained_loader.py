"""Load pretrained weights into a network when an engine starts."""

from __future__ import annotations

import os
from collections.abc import Sequence
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
    Several networks (e.g. the K teachers of a multi-teacher stage) are filled from as many checkpoints.

    Args:
        network: module to fill (a ``DistributedDataParallel`` wrapper is unwrapped), or a sequence of modules.
        checkpoint: path of the ``.pt`` file (plain state dict or ``CheckpointSaver`` output), or one path per
            module when ``network`` is a sequence.
        key: entry of a checkpoint dict holding the state dict; default ``"model"``/``"network"``/the only entry.

    Raises:
        ValueError: ``network`` is a sequence and ``checkpoint`` is not a sequence of the same length.
    """

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module],
        checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
        key: str | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            network = list(network)
            paths = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
            if len(paths) != len(network):
                raise ValueError(
                    f"PretrainedLoader got {len(network)} networks but {len(paths)} checkpoints ({paths}); "
                    "give one checkpoint per network."
                )
            checkpoint = paths
        self.network = network
        self.checkpoint = checkpoint
        self.key = key

    def attach(self, engine: Engine) -> None:
        """Load the weights when ``engine`` starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Load the checkpoint(s) onto the engine's device."""
        if isinstance(self.network, nn.Module):
            load_pretrained(self.network, self.checkpoint, key=self.key, map_location=str(engine.state.device))
            return
        for network, checkpoint in zip(self.network, self.checkpoint):
            load_pretrained(network, checkpoint, key=self.key, map_location=str(engine.state.device))
