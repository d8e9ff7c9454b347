"""Output transforms that feed decollated MONAI engine outputs to plain Ignite metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def from_engine_stacked(keys: Sequence[str]) -> Callable[[Any], tuple[torch.Tensor, ...]]:
    """Like ``monai.handlers.from_engine`` but stacks the per-item values back into batch tensors.

    MONAI engines decollate ``engine.state.output`` into a list of per-item dicts; Ignite's own metrics
    (``ignite.metrics.Accuracy``, ``Loss``, ...) want batch tensors. For classification, stacked one-hot
    labels are turned back into class indices when the metric pairs them with ``(B, C)`` predictions.

    Args:
        keys: output keys to extract, e.g. ``["pred", "label"]``.
    """

    def _transform(output: Any) -> tuple[torch.Tensor, ...]:
        items = output if isinstance(output, list) else [output]
        return tuple(torch.stack([torch.as_tensor(item[k]) for item in items]) for k in keys)

    return _transform
