"""Fidelity: how often a student agrees with its teacher (top-1 agreement, or Dice of the argmax masks)."""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, compute_dice
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

FIDELITY_TASKS = ("classification", "segmentation")


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(logits, dtype=torch.float32).scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)


def fidelity(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    task: str | None = None,
    reduction: MetricReduction | str = MetricReduction.MEAN,
) -> torch.Tensor:
    """Agreement of a student with its teacher, ignoring the labels.

    Classification ``(B, C)``: top-1 agreement, 1 where both argmax classes match. Segmentation
    ``(B, C, *spatial)``: Dice between the one-hot argmax masks (MONAI ``compute_dice``), averaged over the
    foreground classes; two empty masks agree perfectly (Dice 1).

    Args:
        student_logits: student outputs, class axis 1 (logits or probabilities).
        teacher_logits: teacher outputs of the same shape.
        task: ``"classification"`` or ``"segmentation"``; default by rank (2D tensors are classification).
        reduction: MONAI metric reduction over the batch (``"mean"``, ``"none"`` for per-instance values, ...).

    Returns:
        the reduced fidelity, or a ``(B,)`` tensor with ``reduction="none"``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher outputs differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}."
        )
    task = task or ("classification" if student_logits.ndim == 2 else "segmentation")
    if task not in FIDELITY_TASKS:
        raise ValueError(f'task must be one of {FIDELITY_TASKS}, got "{task}".')
    if task == "classification":
        per_instance = (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).float()
        per_instance = per_instance.reshape(per_instance.shape[0], -1).mean(dim=1)
    else:
        if student_logits.ndim < 3 or student_logits.shape[1] < 2:
            raise ValueError("segmentation fidelity needs (B, C, *spatial) outputs with C >= 2 (background first).")
        dice = compute_dice(
            _one_hot_argmax(student_logits), _one_hot_argmax(teacher_logits), include_background=False, ignore_empty=False
        )
        per_instance = dice.mean(dim=1)
    value, _ = do_metric_reduction(per_instance.unsqueeze(1), reduction)  # MONAI reductions work on (B, C)
    return value.squeeze(-1) if value.ndim else value


class FidelityMetric(CumulativeIterationMetric):
    """Cumulative :func:`fidelity` over iterations, for MONAI evaluators and :class:`monai.handlers.IgniteMetricHandler`.

    Call it with ``y_pred`` = student outputs and ``y`` = teacher outputs (batch-first tensors or lists of
    decollated channel-first items), then :meth:`aggregate`.

    Args:
        task: ``"classification"``, ``"segmentation"`` or ``None`` (by rank of the batch-first outputs).
        reduction: MONAI reduction applied by :meth:`aggregate`.
        get_not_nans: also return the number of values aggregated.
    """

    def __init__(
        self, task: str | None = None, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False
    ) -> None:
        super().__init__()
        if task is not None and task not in FIDELITY_TASKS:
            raise ValueError(f'task must be one of {FIDELITY_TASKS} or None, got "{task}".')
        self.task = task
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("FidelityMetric needs the teacher outputs as y.")
        return fidelity(y_pred, y, task=self.task, reduction=MetricReduction.NONE).unsqueeze(1)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffered per-instance fidelities (``reduction`` overrides the one given at construction)."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        value, not_nans = do_metric_reduction(data, reduction or self.reduction)
        value, not_nans = (value.squeeze(-1), not_nans.squeeze(-1)) if value.ndim else (value, not_nans)
        return (value, not_nans) if self.get_not_nans else value
