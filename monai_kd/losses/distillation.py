"""One loss object for a distillation step: supervision + logit KD + feature KD."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_kd.losses.feature_kd import FeatureKDLoss
from monai_kd.losses.multi_teacher import MultiTeacherKDLoss


class DistillationLoss(_Loss):
    """``task_weight * task_loss(y_s, y) + kd_weight * KD(y_s, teachers) + feature_weight * sum_i FeatureKD_i``.

    This is what :class:`monai_kd.engines.DistillationTrainer` calls each iteration; it sees the labels, the
    student output, every teacher's output and the tapped features. Hinton KD is
    ``task_weight = 1 - alpha, kd_weight = alpha`` with one teacher. Any term can be switched off by leaving
    it ``None``/empty or giving it weight 0.

    After each call ``last_terms`` holds the (unweighted) value of each term as floats, for logging.

    Args:
        task_loss: supervised loss on labels, e.g. ``torch.nn.CrossEntropyLoss`` or MONAI's ``DiceFocalLoss``.
        kd_loss: logit distillation over 1..K teachers (:class:`MultiTeacherKDLoss`).
        feature_losses: :class:`FeatureKDLoss` terms; each names its student and teacher layer.
        task_weight: weight of the supervised term.
        kd_weight: weight of the logit KD term.
        feature_weight: weight of the summed feature terms.
    """

    def __init__(
        self,
        task_loss: nn.Module | None = None,
        kd_loss: MultiTeacherKDLoss | None = None,
        feature_losses: Sequence[FeatureKDLoss] = (),
        task_weight: float = 1.0,
        kd_weight: float = 1.0,
        feature_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if task_loss is None and kd_loss is None and not feature_losses:
            raise ValueError("DistillationLoss needs at least one of task_loss, kd_loss, feature_losses.")
        self.task_loss = task_loss
        self.kd_loss = kd_loss
        self.feature_losses = nn.ModuleList(feature_losses)
        self.task_weight = task_weight
        self.kd_weight = kd_weight
        self.feature_weight = feature_weight
        self.last_terms: dict[str, float] = {}

    @property
    def student_layers(self) -> list[str]:
        """Student layers the feature terms need tapped."""
        return list(dict.fromkeys(f.student_layer for f in self.feature_losses))

    @property
    def teacher_layers(self) -> list[str]:
        """Teacher layers the feature terms need tapped (on the teacher each term names)."""
        return list(dict.fromkeys(f.teacher_layer for f in self.feature_losses))

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor | None,
        teacher_outputs: Sequence[torch.Tensor] = (),
        student_features: Mapping[str, torch.Tensor] | None = None,
        teacher_features: Sequence[Mapping[str, torch.Tensor]] = (),
    ) -> torch.Tensor:
        """
        Args:
            input: student output (logits).
            target: labels for ``task_loss`` (may be ``None`` when there is no task term).
            teacher_outputs: one output per teacher.
            student_features: tapped student features by layer name.
            teacher_features: tapped features by layer name, one mapping per teacher.
        """
        total = input.new_zeros(())
        terms: dict[str, float] = {}
        if self.task_loss is not None and self.task_weight != 0:
            value = self.task_loss(input, target)
            terms["task"] = float(value.detach())
            total = total + self.task_weight * value
        if self.kd_loss is not None and self.kd_weight != 0:
            if not teacher_outputs:
                raise ValueError("kd_loss is set but the trainer gave no teacher outputs.")
            value = self.kd_loss(input, teacher_outputs, labels=target)
            terms["kd"] = float(value.detach())
            total = total + self.kd_weight * value
        if len(self.feature_losses) and self.feature_weight != 0:
            value = input.new_zeros(())
            for term in self.feature_losses:
                s_feat = _lookup(student_features or {}, term.student_layer, "student")
                if term.teacher_index >= len(teacher_features):
                    raise ValueError(f"feature term wants teacher {term.teacher_index} but got {len(teacher_features)}.")
                t_feat = _lookup(teacher_features[term.teacher_index], term.teacher_layer, "teacher")
                value = value + term(s_feat, t_feat)
            terms["feature"] = float(value.detach())
            total = total + self.feature_weight * value
        self.last_terms = terms
        return total


def _lookup(features: Mapping[str, torch.Tensor], name: str, who: str) -> torch.Tensor:
    if name not in features:
        raise KeyError(f"{who} feature '{name}' was not tapped; tapped layers: {sorted(features)}.")
    return features[name]
