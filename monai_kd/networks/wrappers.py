"""Helpers for networks wrapped by data-parallel containers."""

from __future__ import annotations

from torch import nn


def unwrap_module(network: nn.Module) -> nn.Module:
    """Return the module inside ``DistributedDataParallel`` / ``DataParallel``, or ``network`` itself."""
    if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return network.module
    return network
