"""Multi-teacher logit distillation with per-instance teacher weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_kd.losses._functional import check_temperature, fuse_probabilities, reduce, soft_kl
from monai_kd.networks.teacher_weighting import UniformWeighting, labelled_nll

#: how a learned teacher weighting is trained (see :class:`MultiTeacherKDLoss`)
WEIGHTING_SIGNALS = ("label", "kd", "label+kd")


class MultiTeacherKDLoss(_Loss):
    """KD from K teachers fused per instance: ``tau^2 * KL(sum_k w_k(x) p_k^tau(x) || p_s^tau(x))``.

    The weights ``w(x)`` of shape ``(B, K)`` come from a pluggable ``weighting`` module (see
    :mod:`monai_kd.networks.teacher_weighting`): uniform, confidence-based (CA-MKD) or a learned network
    whose parameters train with the student (include ``loss.parameters()`` in the optimizer). With
    one teacher and uniform weights this is exactly :class:`monai_kd.losses.KDLoss`.

    A **learned** weighting (one with trainable parameters) needs a signal that can make it right.
    ``weighting_signal`` says where it comes from:

    * ``"label"`` (default): the cross-entropy of the fused teacher prediction at temperature 1,
      ``-log sum_k w_k(x) p_k(y | x)``, on the labelled rows (label ``-1`` marks unlabelled rows, which add
      nothing); the KD term uses the weights detached. The gate learns which teachers explain the label for which
      input, and applies that to unlabelled inputs. The term, times ``weighting_loss_weight``, is added to the
      returned value (it has no gradient into the student or the teachers) and kept in ``last_weighting_loss``.
    * ``"kd"``: the weights get gradients only through the KD term they weight. Minimising
      ``KL(sum_k w_k p_k || p_s)`` over ``w`` rewards the teacher the student already agrees with, right or wrong:
      kept for ablation, not for use.
    * ``"label+kd"``: both.

    Fixed weightings (uniform, confidence) have no parameters and ignore ``weighting_signal``.
    The last weights are kept in ``last_weights`` (detached) so handlers can log them.

    Args:
        temperature: softening temperature ``tau``.
        weighting: module mapping teacher logits ``(K, B, C, ...)`` (and optionally labels, features and
            student logits) to weights ``(B, K)``; default :class:`UniformWeighting`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weighting_signal: ``"label"``, ``"kd"`` or ``"label+kd"`` (see above).
        weighting_loss_weight: weight of the label term of a learned weighting.
        ignore_index: label value of unlabelled rows (or pixels, for dense outputs).
    """

    def __init__(
        self,
        temperature: float = 4.0,
        weighting: nn.Module | None = None,
        reduction: str = "mean",
        weighting_signal: str = "label",
        weighting_loss_weight: float = 1.0,
        ignore_index: int = -1,
    ) -> None:
        super().__init__(reduction=reduction)
        if weighting_signal not in WEIGHTING_SIGNALS:
            raise ValueError(f"weighting_signal must be one of {WEIGHTING_SIGNALS}, got '{weighting_signal}'.")
        self.temperature = check_temperature(temperature)
        self.weighting = UniformWeighting() if weighting is None else weighting
        self.weighting_signal = weighting_signal
        self.weighting_loss_weight = float(weighting_loss_weight)
        self.ignore_index = ignore_index
        self.last_weights: torch.Tensor | None = None
        self.last_weighting_loss: float | None = None

    @property
    def learned_weighting(self) -> bool:
        """Whether the weighting has trainable parameters."""
        return any(p.requires_grad for p in self.weighting.parameters())

    def forward(
        self,
        input: torch.Tensor,
        target: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        teacher_features: Sequence[torch.Tensor] | None = None,
        student_features: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            input: student logits ``(B, C[, *spatial])``.
            target: one logits tensor per teacher, each shaped like ``input``.
            labels: optional ground truth (class indices; ``-1`` marks an unlabelled instance), passed to the
                weighting and, for a learned weighting, its label signal.
            teacher_features: optional per-teacher features, passed to the weighting.
            student_features: optional tapped student features, passed to the weighting when given (only
                weightings that read features take them, e.g. :class:`monai_kd.networks.MetaWeightNetwork`).
        """
        if len(target) == 0:
            raise ValueError("MultiTeacherKDLoss needs at least one teacher output.")
        teacher_logits = torch.stack([t.detach().float() for t in target])
        extra = {} if student_features is None else {"student_features": student_features}
        weights = self.weighting(
            teacher_logits, labels=labels, features=teacher_features, student_logits=input, **extra
        )
        if weights.shape != (input.shape[0], len(target)):
            raise ValueError(f"teacher weighting returned shape {tuple(weights.shape)}, expected (B, K).")
        self.last_weights = weights.detach()
        self.last_weighting_loss = None
        learned = self.learned_weighting
        kd_weights = weights if (not learned or "kd" in self.weighting_signal) else weights.detach()
        fused = fuse_probabilities(teacher_logits, kd_weights, self.temperature)
        values = soft_kl(fused, input, self.temperature)
        if learned and "label" in self.weighting_signal and labels is not None:
            term = self.fused_label_nll(teacher_logits, weights, labels)
            self.last_weighting_loss = float(term.detach().mean())
            values = values + self.weighting_loss_weight * term
        return reduce(values, self.reduction)

    def fused_label_nll(self, teacher_logits: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-instance ``-log sum_k w_k p_k(y)`` (temperature 1) on labelled rows, 0 on unlabelled ones: ``(B,)``.

        Args:
            teacher_logits: ``(K, B, C[, *spatial])``.
            weights: ``(B, K)`` teacher weights (with their graph, so the weighting learns from the labels).
            labels: class indices ``(B,)`` or ``(B, [1,] *spatial)``, ``ignore_index`` for unlabelled.
        """
        fused = fuse_probabilities(teacher_logits, weights, temperature=1.0)
        nll, _ = labelled_nll(fused.clamp_min(1e-12).log().unsqueeze(0), labels, self.ignore_index)
        return nll[0]
