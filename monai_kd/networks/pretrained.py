"""Load trained weights into a network with clear errors on mismatch."""

from __future__ import annotations

import os

import torch
from torch import nn

from monai_kd.networks.wrappers import unwrap_module


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the network it is loaded into."""


def load_pretrained(
    network: nn.Module, checkpoint: str | os.PathLike, key: str | None = None, map_location: str = "cpu"
) -> nn.Module:
    """Load ``checkpoint`` into ``network`` strictly and return the network.

    Accepts a plain state dict or a MONAI ``CheckpointSaver`` file (a dict of objects, e.g. ``{"model": ...}``;
    ``key`` picks the entry, default the only entry or ``"model"``/``"network"``).

    Args:
        network: the module to fill.
        checkpoint: path to a ``.pt`` file.
        key: entry of a checkpoint dict that holds the state dict.
        map_location: passed to ``torch.load``.

    Raises:
        FileNotFoundError: the checkpoint file does not exist.
        CheckpointMismatchError: missing/unexpected layer names or shape mismatches (e.g. another class count).
    """
    target = unwrap_module(network)  # fill the wrapped module of (Distributed)DataParallel
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: '{path}' (train that stage first or fix the path).")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        choices = [k for k, v in state.items() if isinstance(v, dict)]
        pick = key or next((k for k in ("model", "network") if k in choices), choices[0] if len(choices) == 1 else None)
        if pick not in state:
            raise CheckpointMismatchError(f"checkpoint '{path}' has entries {list(state)}; pass key= to choose one.")
        state = state[pick]
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing layers {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected layers {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch (checkpoint vs network; different class count?) {shapes[:3]}")
        raise CheckpointMismatchError(
            f"checkpoint '{path}' does not fit {type(target).__name__}: " + "; ".join(parts)
        )
    target.load_state_dict(state)
    return network
