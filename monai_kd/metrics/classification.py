# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Ignite metrics of a classifier's probabilities for bundle evaluators: negative log-likelihood and calibration error.

A bundle's ``evaluate.json`` lists them beside ``ROCAUC`` and ``ignite.metrics.Accuracy`` (the evaluator's
postprocessing has applied the softmax, so ``pred`` holds probabilities)::

    "test_nll": {"_target_": "monai_kd.metrics.classification.ProbabilityNLL",
                 "output_transform": "$monai_kd.handlers.from_engine_stacked(['pred', 'label'])"},
    "test_ece": {"_target_": "monai_kd.metrics.classification.CalibrationError",
                 "output_transform": "$monai_kd.handlers.from_engine_stacked(['pred', 'label'])"}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_kd.metrics.uncertainty import expected_calibration_error

_IGNITE = ("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version)
EpochMetric, _ = optional_import(*_IGNITE, "EpochMetric", as_type="base")
Loss, _ = optional_import(*_IGNITE, "Loss", as_type="base")

__all__ = ["CalibrationError", "ProbabilityNLL", "probability_nll"]


def probability_nll(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean negative log-likelihood of the true classes, ``-mean(log p[label])``, from probabilities.

    Args:
        probs: class probabilities ``(N, C)``.
        labels: class indices ``(N,)`` (or ``(N, 1)``).
        eps: probabilities are clamped to at least ``eps`` before the logarithm.
    """
    labels = torch.as_tensor(labels, device=probs.device).long().reshape(-1)
    return torch.nn.functional.nll_loss(torch.log(probs.float().clamp_min(eps)), labels)


def _calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> float:
    return expected_calibration_error(probs.detach().cpu().numpy(), labels.detach().cpu().numpy().reshape(-1), n_bins)


def _as_indices(output_transform: Callable) -> Callable:
    """``output_transform`` whose labels come out as a ``(N,)`` vector (``EpochMetric`` wants matching shapes)."""

    def _transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        probs, labels = output_transform(output)
        return probs, torch.as_tensor(labels).reshape(-1)

    return _transform


class ProbabilityNLL(Loss):
    """Negative log-likelihood of the true class averaged over the evaluated samples (:func:`probability_nll`).

    Args:
        eps: probabilities are clamped to at least ``eps`` before the logarithm.
        output_transform: gives ``(probs (B, C), labels (B,))`` from the engine output, e.g.
            ``monai_kd.handlers.from_engine_stacked(['pred', 'label'])``.
        device: where the running sum is kept.
    """

    def __init__(self, eps: float = 1e-7, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu"):
        super().__init__(functools.partial(probability_nll, eps=eps), output_transform=output_transform, device=device)


class CalibrationError(EpochMetric):
    """Expected calibration error of the top-1 prediction over the evaluated samples (10 equal-width bins by default).

    Args:
        n_bins: number of confidence bins (:func:`monai_kd.metrics.uncertainty.expected_calibration_error`).
        output_transform: gives ``(probs (B, C), labels (B,))`` from the engine output.
        device: where the predictions are gathered.
    """

    def __init__(self, n_bins: int = 10, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu"):
        super().__init__(functools.partial(_calibration_error, n_bins=n_bins), _as_indices(output_transform),
                         check_compute_fn=False, device=device)
