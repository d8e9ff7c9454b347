"""FixMatch consistency loss (Sohn et al. 2020): confident pseudo-labels supervise a strongly augmented view."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_kd.losses._functional import reduce


class FixMatchLoss(_Loss):
    """``mean_b [ mean_pixels CE(z_s^strong, argmax p) * 1(max p >= threshold) ]``.

    ``p`` are the pseudo-label probabilities from a weak view of the same unlabelled instances: the fused
    teachers' probabilities (EMTKD) or the student's own weak-view prediction (plain FixMatch). They are
    detached. Instances (or pixels/voxels, for dense ``(B, C, *spatial)`` outputs) whose confidence is below
    ``threshold`` contribute zero, and the mean runs over all of them, as in FixMatch, so the term shrinks while
    few pseudo-labels are accepted.

    After each call ``last_mask_rate`` holds the fraction of accepted pseudo-labels (a float, for logging).

    Args:
        threshold: confidence needed to keep a pseudo-label (0.95 in FixMatch and EMTKD).
        target_is_probs: ``target`` holds probabilities (e.g. fused teacher probabilities) instead of logits;
            can be overridden per call.
        reduction: ``"mean"`` (default) over the batch, ``"sum"``, or ``"none"`` for per-instance values.

    Example::

        loss = FixMatchLoss(threshold=0.95)
        value = loss(student(strong_view), student(weak_view))
    """

    def __init__(self, threshold: float = 0.95, target_is_probs: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
        self.threshold = float(threshold)
        self.target_is_probs = target_is_probs
        self.last_mask_rate: float = 0.0

    def forward(self, input: torch.Tensor, target: torch.Tensor, target_is_probs: bool | None = None) -> torch.Tensor:
        """
        Args:
            input: student logits on the strong view, ``(B, C[, *spatial])``.
            target: logits (or probabilities) on the weak view giving the pseudo-labels, same shape as ``input``.
            target_is_probs: overrides the constructor's ``target_is_probs`` for this call.
        """
        if target.shape != input.shape:
            raise ValueError(f"input and target differ in shape: {tuple(input.shape)} vs {tuple(target.shape)}.")
        is_probs = self.target_is_probs if target_is_probs is None else target_is_probs
        target = target.detach().float()
        probs = target if is_probs else F.softmax(target, dim=1)
        confidence, pseudo_labels = probs.max(dim=1)  # (B, *spatial)
        mask = (confidence >= self.threshold).float()
        self.last_mask_rate = float(mask.mean()) if mask.numel() else 0.0
        ce = F.cross_entropy(input.float(), pseudo_labels, reduction="none")  # (B, *spatial)
        per_instance = (ce * mask).reshape(ce.shape[0], -1).mean(dim=1)
        return reduce(per_instance, self.reduction)
