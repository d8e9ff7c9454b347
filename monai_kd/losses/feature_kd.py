"""Feature-map distillation with an optional trainable connector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_kd.losses._functional import reduce


class FeatureKDLoss(_Loss):
    """MSE between a student feature map and a teacher feature map (FitNets-style hint loss).

    When the channel counts differ, a learnable ``1x1`` (2D/3D) convolution maps the student feature
    to the teacher's channels; when spatial sizes differ, the (connected) student feature is resized
    to the teacher's size. The connector is a parameter of this loss: put ``loss.parameters()`` in
    the optimizer. It is used for training only and is not part of the exported student.

    ``student_layer`` / ``teacher_layer`` name the tapped modules (see :class:`monai_kd.networks.FeatureTap`)
    this term compares; :class:`monai_kd.losses.DistillationLoss` uses them to pick features.

    Args:
        student_layer: dotted module name in the student whose output is the student feature.
        teacher_layer: dotted module name in the teacher whose output is the target feature.
        teacher_index: which teacher (0-based) provides the target, for multi-teacher training.
        student_channels: channels of the student feature; with ``teacher_channels`` decides the connector.
        teacher_channels: channels of the teacher feature.
        spatial_dims: 1, 2 or 3, for the connector convolution.
        connector: ``None`` (default) adds a connector only when channels differ; ``True`` always adds one.
        interpolation: mode for ``torch.nn.functional.interpolate`` when spatial sizes differ. The default
            ``"area"`` averages the student map over each teacher cell when shrinking it (adaptive average
            pooling), so every student position counts; ``"nearest"`` would compare one sampled position per cell
            (a 4x4 map against a 1x1 target sees one pixel of sixteen).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per instance).
    """

    def __init__(
        self,
        student_layer: str = "",
        teacher_layer: str = "",
        teacher_index: int = 0,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        spatial_dims: int = 2,
        connector: bool | None = None,
        interpolation: str = "area",
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.teacher_index = teacher_index
        self.interpolation = interpolation
        need = connector if connector is not None else student_channels != teacher_channels
        if need and (student_channels is None or teacher_channels is None):
            raise ValueError("FeatureKDLoss needs student_channels and teacher_channels to build a connector.")
        self.connector: nn.Module = (
            Conv[Conv.CONV, spatial_dims](student_channels, teacher_channels, kernel_size=1) if need else nn.Identity()
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: student feature ``(B, C_s, *spatial_s)``.
            target: teacher feature ``(B, C_t, *spatial_t)``; detached here.
        """
        mapped = self.connector(input)
        target = target.detach()
        if mapped.shape[2:] != target.shape[2:]:
            mapped = F.interpolate(mapped, size=target.shape[2:], mode=self.interpolation)
        if mapped.shape != target.shape:
            raise ValueError(
                f"feature shapes differ after the connector: student '{self.student_layer}' {tuple(mapped.shape)} vs "
                f"teacher '{self.teacher_layer}' {tuple(target.shape)}; set student_channels/teacher_channels."
            )
        per_instance = (mapped.float() - target.float()).pow(2).reshape(mapped.shape[0], -1).mean(dim=1)
        return reduce(per_instance, self.reduction)


def per_teacher_feature_losses(
    student_layer: str,
    student_channels: int | None,
    teacher_layers: Sequence[str],
    teacher_channels: Sequence[int | None],
    spatial_dims: int = 2,
    reduction: str = "mean",
    enabled: bool = True,
) -> list[FeatureKDLoss]:
    """One :class:`FeatureKDLoss` per teacher: from ``student_layer`` to teacher ``k``'s ``teacher_layers[k]``.

    Args:
        student_layer: tapped student layer.
        student_channels: its channel count.
        teacher_layers: one tapped layer per teacher (teachers of different families have different layer names).
        teacher_channels: their channel counts.
        spatial_dims: spatial dimensions of the features.
        reduction: reduction of each loss (``"none"``: per-sample, for a per-teacher weighting).
        enabled: ``False`` gives no loss (a bundle switches the feature terms off without building them).
    """
    if not enabled:
        return []
    if len(teacher_layers) != len(teacher_channels):
        raise ValueError(f"{len(teacher_layers)} teacher layers but {len(teacher_channels)} channel counts.")
    return [
        FeatureKDLoss(student_layer, layer, k, student_channels, channels, spatial_dims=spatial_dims, reduction=reduction)
        for k, (layer, channels) in enumerate(zip(teacher_layers, teacher_channels))
    ]
