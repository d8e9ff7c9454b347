"""Modules that wrap or extend models: feature taps, teacher weighting, gradient reversal, checkpoint loading,
mixtures of classifiers."""

from __future__ import annotations

from monai_kd.networks.domain_adversarial import DomainAdversarialNetwork
from monai_kd.networks.ensemble import MeanProbabilities, member_name, select_member
from monai_kd.networks.fast_student import FastStudent, SeparableBlock
from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.gradient_reversal import GradientReversal, dann_coefficient
from monai_kd.networks.learned_gate import LearnedGateWeighting
from monai_kd.networks.meta_weight import MetaWeightNetwork
from monai_kd.networks.pretrained import CheckpointError, CheckpointMismatchError, load_checkpoint, load_pretrained
from monai_kd.networks.teacher_weighting import ConfidenceWeighting, TeacherWeighting, UniformWeighting
from monai_kd.networks.wrappers import unwrap_module

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfidenceWeighting",
    "DomainAdversarialNetwork",
    "FastStudent",
    "FeatureTap",
    "GradientReversal",
    "LearnedGateWeighting",
    "MeanProbabilities",
    "MetaWeightNetwork",
    "SeparableBlock",
    "TeacherWeighting",
    "UniformWeighting",
    "dann_coefficient",
    "load_checkpoint",
    "load_pretrained",
    "member_name",
    "select_member",
    "unwrap_module",
]
