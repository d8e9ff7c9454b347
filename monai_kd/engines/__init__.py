"""Trainers built on MONAI's engines, and the iteration steps they share."""

from __future__ import annotations

from monai_kd.engines.chain import DistillationChain, chain_datalists, chain_partition, merge_datalists
from monai_kd.engines.distillation_trainer import DistillationTrainer
from monai_kd.engines.domain_adversarial_trainer import DomainAdversarialTrainer
from monai_kd.engines.kdml_recipes import kdml_teacher_mode, kdml_terms
from monai_kd.engines.multi_student_trainer import LossTerm, MultiStudentTrainer, MultiTermLoss, trainable_parameters
from monai_kd.engines.semi_supervised_trainer import SemiSupervisedDistillationTrainer

__all__ = [
    "DistillationChain",
    "DistillationTrainer",
    "DomainAdversarialTrainer",
    "LossTerm",
    "MultiStudentTrainer",
    "MultiTermLoss",
    "SemiSupervisedDistillationTrainer",
    "chain_datalists",
    "chain_partition",
    "kdml_teacher_mode",
    "kdml_terms",
    "merge_datalists",
    "trainable_parameters",
]
