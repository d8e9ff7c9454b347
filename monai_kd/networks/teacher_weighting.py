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

__all__ = ["CONFIDENCE_FORMS", "TeacherWeighting", "UniformWeighting", "ConfidenceWeighting", "labelled_nll"]


def labelled_nll(log_probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance negative log-likelihood of class-index labels under K predictions, averaged over labelled positions.

    Args:
        log_probs: log class probabilities ``(K, B, C[, *spatial])`` (K predictions, e.g. teachers; K = 1 allowed).
        labels: class indices ``(B,)``, or ``(B, [1,] *spatial)`` for dense outputs; ``ignore_index`` marks an
            unlabelled instance or position.
        ignore_index: label value of unlabelled instances or positions.

    Returns:
        ``(nll, count)``: mean NLL over each instance's labelled positions ``(K, B)`` (0 where it has none) and the
        number of labelled positions per instance ``(B,)``.
    """
    k, b = log_probs.shape[:2]
    spatial = log_probs.shape[3:]
    target = labels.long().reshape(b, *spatial)
    index = target.clamp_min(0).unsqueeze(0).unsqueeze(2).expand(k, b, 1, *spatial)
    nll = -log_probs.gather(2, index).squeeze(2).reshape(k, b, -1)
    mask = (target != ignore_index).reshape(1, b, -1).to(nll.dtype)
    count = mask.sum(dim=2)[0]
    return (nll * mask).sum(dim=2) / count.clamp_min(1.0), count


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


#: forms of :class:`ConfidenceWeighting`
CONFIDENCE_FORMS = ("softmin", "camkd")


class ConfidenceWeighting(TeacherWeighting):
    """Confidence-aware teacher weights: teachers that are more right (or more confident) weigh more.

    Each teacher k gets a score per instance: ``CE(p_k, y)`` for a labelled instance, the entropy ``H(p_k)`` for
    an unlabelled one (label ``-1`` or no labels at all); dense outputs average the score over labelled pixels or
    voxels. Scores become weights in one of two forms:

    * ``form="softmin"``: ``w_k = softmax_k(-score_k / sharpness)``, i.e. ``w_k ∝ exp(-CE_k)``: the form
      ``../shared/papers/METHODS.md`` specifies for EMTKD's confidence weighting.
    * ``form="camkd"``: ``w_k = (1 - softmax_k(score_k / sharpness)) / (K - 1)``, the exact weights of CA-MKD
      (Zhang, Chen & Wang, ICASSP 2022). With two teachers both forms are equal; with more they differ (scores
      [0.1, 0.5, 2.0] give [0.446, 0.419, 0.136] here against [0.549, 0.368, 0.082] for ``softmin``: CA-MKD is
      flatter and never gives a teacher more than ``1 / (K - 1)``). One teacher gets weight 1.

    Args:
        sharpness: divides the scores before the softmax over teachers; smaller is sharper. 1 is the papers' form.
        ignore_index: label value that marks an unlabelled instance or pixel.
        form: ``"softmin"`` or ``"camkd"`` (see above).
    """

    def __init__(self, sharpness: float = 1.0, ignore_index: int = -1, form: str = "softmin") -> None:
        super().__init__()
        if not sharpness > 0:
            raise ValueError(f"sharpness must be > 0, got {sharpness}.")
        if form not in CONFIDENCE_FORMS:
            raise ValueError(f"form must be one of {CONFIDENCE_FORMS}, got '{form}'.")
        self.sharpness = float(sharpness)
        self.ignore_index = ignore_index
        self.form = form

    def forward(self, teacher_logits, labels=None, features=None, student_logits=None) -> torch.Tensor:  # noqa: D102
        k, b = teacher_logits.shape[:2]
        log_p = F.log_softmax(teacher_logits.float(), dim=2)  # (K, B, C, ...)
        score = -(log_p.exp() * log_p).sum(dim=2).reshape(k, b, -1).mean(dim=2)  # entropy (K, B)
        if labels is not None:
            ce, count = labelled_nll(log_p, labels, self.ignore_index)
            score = torch.where(count > 0, ce, score)
        scaled = score.t() / self.sharpness  # (B, K)
        if self.form == "softmin" or k == 1:
            return F.softmax(-scaled, dim=1)
        return (1.0 - F.softmax(scaled, dim=1)) / (k - 1)
