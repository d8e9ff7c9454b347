"""Per-instance teacher weighting strategies for multi-teacher distillation.

Every strategy is an ``nn.Module`` called as
``weighting(teacher_logits, labels=None, features=None, student_logits=None)`` with ``teacher_logits`` of shape
``(K, B, C[, *spatial])``; it returns weights of shape ``(B, K)``, non-negative and summing to one per instance.
Learned strategies simply own parameters; :class:`monai_kd.losses.MultiTeacherKDLoss` exposes them through
``parameters()`` so they train with the student.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TeacherWeighting", "UniformWeighting", "ConfidenceWeighting"]


class TeacherWeighting(nn.Module):
    """Base class: maps teacher outputs for a batch to per-instance weights ``(B, K)``."""

    def forward(
        self,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        features: Sequence[torch.Tensor] | None = None,
        student_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            teacher_logits: ``(K, B, C[, *spatial])`` stacked teacher logits (detached).
            labels: optional class indices ``(B,)`` or dense labels ``(B, 1, *spatial)``; ``-1`` marks unlabelled.
            features: optional per-teacher intermediate features (for learned strategies).
            student_logits: optional student logits (for learned strategies).
        """
        raise NotImplementedError


class UniformWeighting(TeacherWeighting):
    """Every teacher gets weight ``1/K`` for every instance (plain multi-teacher averaging)."""

    def forward(self, teacher_logits, labels=None, features=None, student_logits=None) -> torch.Tensor:  # noqa: D102
        k, b = teacher_logits.shape[:2]
        return teacher_logits.new_full((b, k), 1.0 / k)


class ConfidenceWeighting(TeacherWeighting):
    """Confidence-aware weights in the style of CA-MKD (Zhang, Chen & Wang, ICASSP 2022).

    For a labelled instance, ``w_k ∝ exp(-CE(p_k, y) / sharpness)``: teachers that are more correct on the
    ground truth get more weight. For an unlabelled instance (label ``-1`` or no labels at all),
    ``w_k ∝ exp(-H(p_k) / sharpness)``: more confident (lower-entropy) teachers get more weight. For dense
    outputs the cross-entropy / entropy is averaged over pixels or voxels (ignoring label ``-1``).

    Args:
        sharpness: divides the scores before the softmax over teachers; smaller is sharper. 1 is CA-MKD's form.
        ignore_index: label value that marks an unlabelled instance or pixel.
    """

    def __init__(self, sharpness: float = 1.0, ignore_index: int = -1) -> None:
        super().__init__()
        if not sharpness > 0:
            raise ValueError(f"sharpness must be > 0, got {sharpness}.")
        self.sharpness = float(sharpness)
        self.ignore_index = ignore_index

    def forward(self, teacher_logits, labels=None, features=None, student_logits=None) -> torch.Tensor:  # noqa: D102
        k, b = teacher_logits.shape[:2]
        log_p = F.log_softmax(teacher_logits.float(), dim=2)  # (K, B, C, ...)
        entropy = -(log_p.exp() * log_p).sum(dim=2).reshape(k, b, -1).mean(dim=2)  # (K, B)
        score = entropy
        if labels is not None:
            spatial = log_p.shape[3:]
            target = labels.long().reshape(b, *spatial)  # (B,) or (B, *spatial)
            index = target.clamp_min(0).unsqueeze(0).unsqueeze(2).expand(k, b, 1, *spatial)
            nll = -log_p.gather(2, index).squeeze(2).reshape(k, b, -1)  # (K, B, N)
            mask = (target != self.ignore_index).reshape(1, b, -1).float()
            count = mask.sum(dim=2)
            ce = (nll * mask).sum(dim=2) / count.clamp_min(1.0)
            score = torch.where(count > 0, ce, entropy)
        return F.softmax(-score.t() / self.sharpness, dim=1)
