"""Trainers built on MONAI's engines, and the iteration steps they share."""

from __future__ import annotations

from monai_kd.engines.distillation_trainer import DistillationTrainer
from monai_kd.engines.domain_adversarial_trainer import DomainAdversarialTrainer
from monai_kd.engines.kdml_recipes import kdml_teacher_mode, kdml_terms
from monai_kd.engines.multi_student_trainer import LossTerm, MultiStudentTrainer, MultiTermLoss, trainable_parameters
from monai_kd.engines.semi_supervised_trainer import SemiSupervisedDistillationTrainer

__all__ = [
    "DistillationTrainer",
    "DomainAdversarialTrainer",
    "LossTerm",
    "MultiStudentTrainer",
    "MultiTermLoss",
    "SemiSupervisedDistillationTrainer",
    "kdml_teacher_mode",
    "kdml_terms",
    "trainable_parameters",
]
