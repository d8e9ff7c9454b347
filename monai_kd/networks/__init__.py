"""Modules that wrap or extend models: feature taps, connectors, teacher weighting, checkpoint loading."""

from __future__ import annotations

from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.pretrained import load_pretrained
from monai_kd.networks.teacher_weighting import ConfidenceWeighting, TeacherWeighting, UniformWeighting
from monai_kd.networks.wrappers import unwrap_module

__all__ = ["FeatureTap", "load_pretrained", "TeacherWeighting", "UniformWeighting", "ConfidenceWeighting", "unwrap_module"]
