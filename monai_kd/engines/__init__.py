"""Trainers built on MONAI's engines."""

from __future__ import annotations

from monai_kd.engines.distillation_trainer import DistillationTrainer

__all__ = ["DistillationTrainer"]
