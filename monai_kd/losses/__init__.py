"""Distillation objectives, each a ``torch.nn.modules.loss._Loss``."""

from __future__ import annotations

from monai_kd.losses.distillation import DistillationLoss
from monai_kd.losses.feature_kd import FeatureKDLoss, per_teacher_feature_losses
from monai_kd.losses.fixmatch import FixMatchLoss
from monai_kd.losses.logit_kd import KDLoss
from monai_kd.losses.multi_teacher import MultiTeacherKDLoss
from monai_kd.losses.mutual_learning import MutualLearningLoss

__all__ = ["DistillationLoss", "FeatureKDLoss", "FixMatchLoss", "KDLoss", "MultiTeacherKDLoss", "MutualLearningLoss", "per_teacher_feature_losses"]
