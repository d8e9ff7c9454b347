"""Functional helpers shared by the distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(target_probs: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-instance ``tau^2 * KL(p_t || softmax(z_s / tau))`` over the class axis (dim 1).

    Works for classification ``(B, C)`` and dense ``(B, C, *spatial)`` outputs: the KL divergence is summed
    over classes and averaged over spatial positions, giving one value per instance.

    Args:
        target_probs: soft targets already at temperature ``tau``, same shape as ``student_logits``.
        student_logits: raw student logits.
        temperature: softening temperature ``tau`` (> 0).

    Returns:
        tensor of shape ``(B,)``.
    """
    if target_probs.shape != student_logits.shape:
        raise ValueError(
            f"teacher and student outputs differ in shape: {tuple(target_probs.shape)} vs {tuple(student_logits.shape)}"
            " (check num_classes / out_channels of the teacher and the student)."
        )
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    # xlogy gives 0 * log 0 = 0 for classes the target assigns no mass to.
    kl = torch.special.xlogy(target_probs, target_probs) - target_probs * log_p_s
    kl = kl.sum(dim=1)
    return (temperature**2) * kl.reshape(kl.shape[0], -1).mean(dim=1)


def tempered_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / temperature)`` over the class axis (dim 1), computed in float32."""
    return F.softmax(logits.float() / temperature, dim=1)


def fuse_probabilities(
    teacher_logits: torch.Tensor, weights: torch.Tensor | None, temperature: float = 1.0
) -> torch.Tensor:
    """Per-instance weighted mixture of the teachers' softened predictions, ``sum_k w_k(x) p_k^tau(x)``.

    Args:
        teacher_logits: stacked teacher logits ``(K, B, C[, *spatial])``.
        weights: ``(B, K)`` per-instance teacher weights; ``None`` means uniform.
        temperature: softening temperature ``tau``.

    Returns:
        fused probabilities ``(B, C[, *spatial])``.
    """
    probs = tempered_softmax(teacher_logits.flatten(0, 1), temperature).view_as(teacher_logits)
    if weights is None:
        return probs.mean(dim=0)
    expand = weights.t().reshape(*weights.t().shape, *([1] * (teacher_logits.dim() - 2)))
    return (expand * probs).sum(dim=0)


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as float, raising a clear error if it is not positive."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    return float(temperature)


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a MONAI-style ``reduction`` ("mean", "sum", "none") to per-instance values."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f'unsupported reduction "{reduction}", available: "mean", "sum", "none".')
