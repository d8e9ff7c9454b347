# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""The uniform mixture of several classifiers, and choosing a member (or a mixture) of a ``ModuleDict`` by name."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MeanProbabilities", "member_name", "select_member"]


class MeanProbabilities(nn.Module):
    """Classifiers whose class probabilities are averaged (a uniform mixture, as uniform multi-teacher KD fuses them).

    The output is the logarithm of the mean softmax: a softmax of it (what the bundles' postprocessing applies) gives
    back the mean probabilities exactly, so metrics and NLL score the mixture.

    Args:
        networks: the classifiers (same input, logits over the same classes).
        eps: floor of the mean probability before the logarithm.
    """

    def __init__(self, networks: Sequence[nn.Module], eps: float = 1e-12) -> None:
        super().__init__()
        if not networks:
            raise ValueError("MeanProbabilities needs at least one network.")
        self.networks = nn.ModuleList(networks)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(net(x).float(), dim=1) for net in self.networks]).mean(0)
        return probabilities.clamp_min(self.eps).log()


def select_member(network: nn.Module, member: str | Sequence[str] | None = None) -> nn.Module:
    """The model to evaluate: ``network`` itself, one member of it by name, or the mixture of several members.

    Args:
        network: a network, or a ``ModuleDict`` of them (e.g. the teachers).
        member: ``None`` (the network), a name, or a list of names (their :class:`MeanProbabilities`).
    """
    if member is None:
        return network
    if isinstance(member, str):
        return network[member]
    return MeanProbabilities([network[m] for m in member])


def member_name(member: str | Sequence[str] | None, checkpoint: str | os.PathLike) -> str:
    """The name scores of :func:`select_member`'s model are written under: the member's name, ``mean(a,b,c)`` for a
    mixture, else the checkpoint's file name without its extension."""
    if member is None:
        return os.path.splitext(os.path.basename(checkpoint))[0]
    return member if isinstance(member, str) else f"mean({','.join(member)})"
