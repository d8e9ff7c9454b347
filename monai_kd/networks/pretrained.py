"""Load trained weights into a network with clear errors on mismatch."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from monai_kd.networks.wrappers import unwrap_module


class CheckpointError(ValueError):
    """A checkpoint file is empty, truncated, not a torch file, or holds pickled objects (refused)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the network it is loaded into."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear line naming the file when it cannot be used.

    ``weights_only=True`` loads tensors and plain containers only: a checkpoint holding any other pickled Python
    object (which could run code when unpickled) is refused.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is empty, truncated or corrupt, or holds pickled objects other than tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: '{path}'.")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes); train again or restore the file.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised as one line naming the file
        text = str(e)
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"checkpoint '{path}' holds pickled Python objects, not only tensors: refused (torch.load with"
                " weights_only=True); use checkpoints from a source you trust, saved as state dicts."
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise CheckpointError(f"checkpoint '{path}' is truncated or not a torch file ({first}).") from None


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
        CheckpointError: the file is empty, truncated, or holds pickled objects (see :func:`load_checkpoint`).
        CheckpointMismatchError: missing/unexpected layer names or shape mismatches (e.g. another class count).
    """
    target = unwrap_module(network)  # fill the wrapped module of (Distributed)DataParallel
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: '{path}' (train that stage first or fix the path).")
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"checkpoint '{path}' holds a {type(state).__name__}, not a state dict.")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
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
