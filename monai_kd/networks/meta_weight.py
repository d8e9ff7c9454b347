"""MMKD's meta-weight network: per-instance teacher weights from teacher and student outputs (and features)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_kd.networks.learned_gate import pooled_probs
from monai_kd.networks.teacher_weighting import TeacherWeighting

__all__ = ["MetaWeightNetwork", "pool_feature"]


class MetaWeightNetwork(TeacherWeighting):
    """Softmax weights over K teachers per instance, learned by meta-learning on a held-out quiz split (MMKD).

    Input of the network for instance ``b`` (all detached, so neither teachers nor student learn through it):

    - the K teachers' class probabilities ``softmax(z_k(b))`` and the student's ``softmax(z_s(b))`` (averaged over
      pixels/voxels for dense outputs);
    - with ``use_features``: each teacher's and the student's intermediate feature at the named layer,
      global-average-pooled to ``(B, C_layer)``, L2-normalised and projected by its own linear connector to
      ``feature_dim`` values (teachers of different families have different channel counts).

    A two-layer MLP maps the concatenation to K scores; a softmax over teachers gives ``w(b)``, non-negative and
    summing to one. Its output layer starts at zero, so training starts from uniform weights. The network does **not** learn from the loss it weights: :class:`monai_kd.engines.meta_step.
    MetaWeightedStep` updates it with the gradient of the quiz cross-entropy of a virtually updated student (its
    parameters must stay out of the student's optimizer). Labels are never an input: the quiz loss is its signal.

    Args:
        num_teachers: K.
        num_classes: C, the class (channel) count of the outputs.
        hidden: width of the hidden layer.
        use_features: also feed pooled intermediate features (MMKD's feature-aware branch).
        teacher_layers: with ``use_features``, the tapped layer of each teacher (one name per teacher).
        teacher_channels: channel count of each teacher's layer.
        student_layer: with ``use_features``, the tapped student layer.
        student_channels: channel count of the student's layer.
        feature_dim: width each pooled feature is projected to.
    """

    uses_features = True  # DistillationLoss passes tapped teacher and student features to the call

    def __init__(
        self,
        num_teachers: int,
        num_classes: int,
        hidden: int = 64,
        use_features: bool = False,
        teacher_layers: Sequence[str] = (),
        teacher_channels: Sequence[int] = (),
        student_layer: str = "",
        student_channels: int = 0,
        feature_dim: int = 16,
    ) -> None:
        super().__init__()
        if num_teachers < 1 or num_classes < 1 or hidden < 1:
            raise ValueError(f"num_teachers, num_classes and hidden must be >= 1, got {num_teachers}, {num_classes}, {hidden}.")
        self.num_teachers = num_teachers
        self.num_classes = num_classes
        self.use_features = use_features
        self.teacher_feature_layers = list(teacher_layers)
        self.student_feature_layer = student_layer
        in_features = (num_teachers + 1) * num_classes
        if use_features:
            if len(self.teacher_feature_layers) != num_teachers or len(teacher_channels) != num_teachers:
                raise ValueError(
                    f"use_features needs one teacher layer and one channel count per teacher ({num_teachers}), got "
                    f"{len(self.teacher_feature_layers)} layers and {len(teacher_channels)} channel counts."
                )
            if not student_layer or student_channels < 1:
                raise ValueError("use_features needs student_layer and student_channels.")
            self.projections = nn.ModuleList(
                [nn.Linear(c, feature_dim) for c in teacher_channels] + [nn.Linear(student_channels, feature_dim)]
            )
            in_features += (num_teachers + 1) * feature_dim
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_teachers))
        # start from uniform weights: the quiz loss moves them away only where it has a reason to
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @property
    def student_layers(self) -> list[str]:
        """Student layers the network reads (to tap)."""
        return [self.student_feature_layer] if self.use_features else []

    def teacher_layers_per_teacher(self, num_teachers: int) -> list[list[str]]:
        """Teacher layers the network reads, one list per teacher (to tap)."""
        if not self.use_features:
            return [[] for _ in range(num_teachers)]
        return [[name] for name in self.teacher_feature_layers]

    def forward(  # type: ignore[override]
        self,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        features: Sequence[Mapping[str, torch.Tensor]] | None = None,
        student_logits: torch.Tensor | None = None,
        student_features: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            teacher_logits: ``(K, B, C[, *spatial])``.
            labels: ignored (the quiz loss is the signal).
            features: tapped teacher features, one ``{layer: tensor}`` per teacher (``use_features`` only).
            student_logits: ``(B, C[, *spatial])``; required.
            student_features: tapped student features ``{layer: tensor}`` (``use_features`` only).

        Returns:
            weights ``(B, K)``, non-negative, summing to one per instance.
        """
        k, b, c = teacher_logits.shape[:3]
        if (k, c) != (self.num_teachers, self.num_classes):
            raise ValueError(
                f"MetaWeightNetwork was built for {self.num_teachers} teachers x {self.num_classes} classes, got {k} x {c}."
            )
        if student_logits is None:
            raise ValueError("MetaWeightNetwork needs student_logits.")
        probs = pooled_probs(teacher_logits.detach().flatten(0, 1)).view(k, b, c).permute(1, 0, 2).reshape(b, k * c)
        inputs = [probs, pooled_probs(student_logits.detach())]
        if self.use_features:
            if features is None or len(features) != k or student_features is None:
                raise ValueError("MetaWeightNetwork(use_features=True) needs tapped teacher and student features.")
            pooled = [_get(f, name, f"teacher {i}") for i, (f, name) in enumerate(zip(features, self.teacher_feature_layers))]
            pooled.append(_get(student_features, self.student_feature_layer, "student"))
            inputs += [proj(F.normalize(pool_feature(x.detach()), dim=1)) for proj, x in zip(self.projections, pooled)]
        return F.softmax(self.net(torch.cat(inputs, dim=1)), dim=1)


def pool_feature(feature: torch.Tensor) -> torch.Tensor:
    """Global average pooling of ``(B, C, *spatial)`` to ``(B, C)`` (``(B, C)`` is returned as float)."""
    return feature.float().reshape(*feature.shape[:2], -1).mean(dim=2)


def _get(features: Mapping[str, torch.Tensor], name: str, who: str) -> torch.Tensor:
    if name not in features:
        raise KeyError(f"{who} feature '{name}' was not tapped; tapped: {sorted(features)}.")
    return features[name]
