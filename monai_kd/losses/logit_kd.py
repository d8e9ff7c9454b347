"""Hinton logit distillation for classification and dense (segmentation) outputs."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai_kd.losses._functional import check_temperature, reduce, soft_kl, tempered_softmax


class KDLoss(_Loss):
    """Logit knowledge distillation (Hinton et al. 2015): ``tau^2 * KL(p_t^tau || p_s^tau)``.

    The class axis is dim 1, so the same loss serves classification logits ``(B, C)`` and dense
    outputs ``(B, C, H, W[, D])``, where the divergence is computed per pixel/voxel and averaged.
    The teacher output is detached: gradients flow to the student only.

    Args:
        temperature: softening temperature ``tau``; the loss is scaled by ``tau^2`` so gradient
            magnitudes stay comparable across temperatures.
        reduction: ``"mean"`` (default) over the batch, ``"sum"``, or ``"none"`` for per-instance values.

    Example::

        loss = KDLoss(temperature=4.0)
        value = loss(student_logits, teacher_logits)
    """

    def __init__(self, temperature: float = 4.0, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.temperature = check_temperature(temperature)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: student logits, ``(B, C[, *spatial])``.
            target: teacher logits of the same shape.
        """
        probs = tempered_softmax(target.detach(), self.temperature)
        return reduce(soft_kl(probs, input, self.temperature), self.reduction)
