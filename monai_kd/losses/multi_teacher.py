"""Multi-teacher logit distillation with per-instance teacher weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_kd.losses._functional import check_temperature, fuse_probabilities, reduce, soft_kl
from monai_kd.networks.teacher_weighting import UniformWeighting


class MultiTeacherKDLoss(_Loss):
    """KD from K teachers fused per instance: ``tau^2 * KL(sum_k w_k(x) p_k^tau(x) || p_s^tau(x))``.

    The weights ``w(x)`` of shape ``(B, K)`` come from a pluggable ``weighting`` module (see
    :mod:`monai_kd.networks.teacher_weighting`): uniform, confidence-based (CA-MKD) or a learned network
    whose parameters train with the student (include ``loss.parameters()`` in the optimizer). With
    one teacher and uniform weights this is exactly :class:`monai_kd.losses.KDLoss`.

    The last weights are kept in ``last_weights`` (detached) so handlers can log them.

    Args:
        temperature: softening temperature ``tau``.
        weighting: module mapping teacher logits ``(K, B, C, ...)`` (and optionally labels, features and
            student logits) to weights ``(B, K)``; default :class:`UniformWeighting`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, temperature: float = 4.0, weighting: nn.Module | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.temperature = check_temperature(temperature)
        self.weighting = UniformWeighting() if weighting is None else weighting
        self.last_weights: torch.Tensor | None = None

    def forward(
        self,
        input: torch.Tensor,
        target: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        teacher_features: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            input: student logits ``(B, C[, *spatial])``.
            target: one logits tensor per teacher, each shaped like ``input``.
            labels: optional ground truth (class indices; ``-1`` marks an unlabelled instance), passed to the weighting.
            teacher_features: optional per-teacher features, passed to the weighting.
        """
        if len(target) == 0:
            raise ValueError("MultiTeacherKDLoss needs at least one teacher output.")
        teacher_logits = torch.stack([t.detach().float() for t in target])
        weights = self.weighting(teacher_logits, labels=labels, features=teacher_features, student_logits=input)
        if weights.shape != (input.shape[0], len(target)):
            raise ValueError(f"teacher weighting returned shape {tuple(weights.shape)}, expected (B, K).")
        self.last_weights = weights.detach()
        fused = fuse_probabilities(teacher_logits, weights, self.temperature)
        return reduce(soft_kl(fused, input, self.temperature), self.reduction)
