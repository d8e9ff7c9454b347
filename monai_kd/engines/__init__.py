"""One distillation engine on MONAI's ``SupervisedTrainer``, its step hooks, and the trainers configured over it."""

from __future__ import annotations

from monai_kd.engines.chain import DistillationChain, chain_datalists, chain_partition, merge_datalists
from monai_kd.engines.distillation_engine import DistillationEngine, StepContext, TrainingStep
from monai_kd.engines.distillation_trainer import DistillationTrainer
from monai_kd.engines.domain_adversarial_trainer import DomainAdversarialStep, DomainAdversarialTrainer
from monai_kd.engines.meta_step import MetaWeightedStep, connector_parameters
from monai_kd.engines.kdml_recipes import kdml_teacher_mode, kdml_terms
from monai_kd.engines.multi_student_trainer import (
    LossTerm,
    MultiStudentStep,
    MultiStudentTrainer,
    MultiTermLoss,
    trainable_parameters,
)
from monai_kd.engines.resume import attach_resume, resumable_training
from monai_kd.engines.semi_supervised_trainer import SemiSupervisedDistillationTrainer, SemiSupervisedStep
from monai_kd.engines.teacher_cache import SeededViews, TeacherCacheStep, attach_teacher_cache

__all__ = [
    "DistillationChain",
    "DistillationEngine",
    "DistillationTrainer",
    "DomainAdversarialStep",
    "DomainAdversarialTrainer",
    "LossTerm",
    "MetaWeightedStep",
    "MultiStudentStep",
    "MultiStudentTrainer",
    "MultiTermLoss",
    "SemiSupervisedDistillationTrainer",
    "SeededViews",
    "SemiSupervisedStep",
    "StepContext",
    "TeacherCacheStep",
    "attach_teacher_cache",
    "TrainingStep",
    "attach_resume",
    "resumable_training",
    "chain_datalists",
    "chain_partition",
    "connector_parameters",
    "kdml_teacher_mode",
    "kdml_terms",
    "merge_datalists",
    "trainable_parameters",
]
