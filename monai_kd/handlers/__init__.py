"""Ignite handlers and output transforms for distillation training."""

from __future__ import annotations

from monai_kd.handlers.batch_check import BatchShapeCheck, BatchShapeError
from monai_kd.handlers.distillation_stats import DistillationStatsHandler
from monai_kd.handlers.fidelity_cka import FidelityCKAHandler
from monai_kd.handlers.finite_guard import NonFiniteError, NonFiniteGuard
from monai_kd.handlers.metrics_writer import MetricsJSONWriter
from monai_kd.handlers.output_transforms import from_engine_stacked
from monai_kd.handlers.prediction_writer import PredictionWriter
from monai_kd.handlers.pretrained_loader import PretrainedLoader
from monai_kd.handlers.stage import stage_handlers
from monai_kd.handlers.training_checkpoint import AtomicSaveHandler, ResumeError, TrainingCheckpoint
from monai_kd.handlers.weight_averaging import WeightAveraging

__all__ = [
    "AtomicSaveHandler",
    "BatchShapeCheck",
    "BatchShapeError",
    "DistillationStatsHandler",
    "FidelityCKAHandler",
    "MetricsJSONWriter",
    "NonFiniteError",
    "NonFiniteGuard",
    "PredictionWriter",
    "PretrainedLoader",
    "ResumeError",
    "TrainingCheckpoint",
    "WeightAveraging",
    "from_engine_stacked",
    "stage_handlers",
]
