"""One loss object for a distillation step: supervision + logit KD + feature KD."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_kd.losses.feature_kd import FeatureKDLoss
from monai_kd.losses.multi_teacher import MultiTeacherKDLoss


class DistillationLoss(_Loss):
    """``task_weight * task_loss(y_s, y) + kd_weight * KD(y_s, teachers) + feature_weight * FeatureKD``.

    This is what :class:`monai_kd.engines.DistillationTrainer` calls each iteration; it sees the labels, the
    student output, every teacher's output and the tapped features. Hinton KD is
    ``task_weight = 1 - alpha, kd_weight = alpha`` with one teacher. Any term can be switched off by leaving
    it ``None``/empty or giving it weight 0.

    Features reach the teacher weighting: when ``kd_loss.weighting`` declares ``uses_features = True`` (e.g.
    :class:`monai_kd.networks.MetaWeightNetwork`) it is called with the tapped teacher features (one mapping per
    teacher) and the student's.

    Feature terms: without ``feature_weighting`` the feature term is the sum of the :class:`FeatureKDLoss` terms.
    With a ``feature_weighting`` (any teacher weighting, called like the KD one) the terms are weighted per
    teacher and per instance: ``sum_i mean_b w[b, teacher_index_i] * FeatureKD_i[b]``; the terms must then give
    per-instance values (``reduction="none"``). With one term per teacher and weights summing to one this is a
    convex combination of the teachers' feature hints (MMKD's intermediate-layer branch).

    After each call ``last_terms`` holds the (unweighted) value of each term as floats, for logging, and
    ``last_feature_weights`` the feature weights ``(B, K)`` (detached) when a feature weighting is used.

    Args:
        task_loss: supervised loss on labels, e.g. ``torch.nn.CrossEntropyLoss`` or MONAI's ``DiceFocalLoss``.
        kd_loss: logit distillation over 1..K teachers (:class:`MultiTeacherKDLoss`).
        feature_losses: :class:`FeatureKDLoss` terms; each names its student and teacher layer and teacher index.
        task_weight: weight of the supervised term.
        kd_weight: weight of the logit KD term.
        feature_weight: weight of the feature term.
        feature_weighting: optional per-instance teacher weighting of the feature terms.
    """

    def __init__(
        self,
        task_loss: nn.Module | None = None,
        kd_loss: MultiTeacherKDLoss | None = None,
        feature_losses: Sequence[FeatureKDLoss] = (),
        task_weight: float = 1.0,
        kd_weight: float = 1.0,
        feature_weight: float = 1.0,
        feature_weighting: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if task_loss is None and kd_loss is None and not feature_losses:
            raise ValueError("DistillationLoss needs at least one of task_loss, kd_loss, feature_losses.")
        if feature_weighting is not None and not feature_losses:
            raise ValueError("feature_weighting needs feature_losses to weight.")
        self.task_loss = task_loss
        self.kd_loss = kd_loss
        self.feature_losses = nn.ModuleList(feature_losses)
        self.feature_weighting = feature_weighting
        self.task_weight = task_weight
        self.kd_weight = kd_weight
        self.feature_weight = feature_weight
        self.last_terms: dict[str, float] = {}
        self.last_feature_weights: torch.Tensor | None = None

    def _weightings(self) -> list[nn.Module]:
        """The teacher weightings that read tapped features."""
        kd_weighting = getattr(self.kd_loss, "weighting", None)
        return [w for w in (kd_weighting, self.feature_weighting) if w is not None and getattr(w, "uses_features", False)]

    @property
    def student_layers(self) -> list[str]:
        """Student layers the feature terms and feature-reading weightings need tapped."""
        names = [f.student_layer for f in self.feature_losses]
        for weighting in self._weightings():
            names += list(getattr(weighting, "student_layers", []))
        return list(dict.fromkeys(names))

    @property
    def teacher_layers(self) -> list[str]:
        """Teacher layers the feature terms need tapped (on the teacher each term names)."""
        return list(dict.fromkeys(f.teacher_layer for f in self.feature_losses))

    def teacher_layers_per_teacher(self, num_teachers: int) -> list[list[str]]:
        """The layers to tap on each of ``num_teachers`` teachers (feature terms and feature-reading weightings)."""
        layers: list[list[str]] = [[] for _ in range(num_teachers)]
        for term in self.feature_losses:
            if term.teacher_index >= num_teachers:
                raise ValueError(f"feature term wants teacher {term.teacher_index} but there are {num_teachers}.")
            layers[term.teacher_index].append(term.teacher_layer)
        for weighting in self._weightings():
            per_teacher = getattr(weighting, "teacher_layers_per_teacher", None)
            for k, names in enumerate(per_teacher(num_teachers) if callable(per_teacher) else []):
                layers[k] += list(names)
        return [list(dict.fromkeys(names)) for names in layers]

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
        student_features = student_features or {}
        total = input.new_zeros(())
        terms: dict[str, float] = {}
        if self.task_loss is not None and self.task_weight != 0:
            value = self.task_loss(input, target)
            terms["task"] = float(value.detach())
            total = total + self.task_weight * value
        if self.kd_loss is not None and self.kd_weight != 0:
            if not teacher_outputs:
                raise ValueError("kd_loss is set but the trainer gave no teacher outputs.")
            extra = {}
            if getattr(self.kd_loss.weighting, "uses_features", False):
                extra = {"teacher_features": teacher_features, "student_features": student_features}
            value = self.kd_loss(input, teacher_outputs, labels=target, **extra)
            terms["kd"] = float(value.detach())
            total = total + self.kd_weight * value
        if len(self.feature_losses) and self.feature_weight != 0:
            value = self._feature_term(input, target, teacher_outputs, student_features, teacher_features)
            terms["feature"] = float(value.detach())
            total = total + self.feature_weight * value
        self.last_terms = terms
        return total

    def _feature_term(self, input, target, teacher_outputs, student_features, teacher_features) -> torch.Tensor:
        weights = None
        if self.feature_weighting is not None:
            teacher_logits = torch.stack([t.detach().float() for t in teacher_outputs])
            weights = self.feature_weighting(
                teacher_logits, labels=target, features=teacher_features, student_logits=input,
                **({"student_features": student_features} if getattr(self.feature_weighting, "uses_features", False) else {}),
            )
            self.last_feature_weights = weights.detach()
        value = input.new_zeros(())
        for term in self.feature_losses:
            s_feat = _lookup(student_features, term.student_layer, "student")
            if term.teacher_index >= len(teacher_features):
                raise ValueError(f"feature term wants teacher {term.teacher_index} but got {len(teacher_features)}.")
            t_feat = _lookup(teacher_features[term.teacher_index], term.teacher_layer, "teacher")
            per_term = term(s_feat, t_feat)
            if weights is None:
                value = value + per_term.mean()
            elif per_term.dim() != 1 or per_term.shape[0] != weights.shape[0]:
                raise ValueError(
                    f"feature_weighting needs per-instance feature terms: build FeatureKDLoss('{term.student_layer}', "
                    f"'{term.teacher_layer}', ..., reduction='none'); got shape {tuple(per_term.shape)}."
                )
            else:
                value = value + (weights[:, term.teacher_index] * per_term).mean()
        return value


def _lookup(features: Mapping[str, torch.Tensor], name: str, who: str) -> torch.Tensor:
    if name not in features:
        raise KeyError(f"{who} feature '{name}' was not tapped; tapped layers: {sorted(features)}.")
    return features[name]
