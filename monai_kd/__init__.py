"""monai_kd: knowledge distillation for MONAI.

Subpackages:
    losses: distillation objectives (logit KD, feature KD, mutual learning, multi-teacher KD, composite loss).
    networks: feature taps, teacher weighting strategies, checkpoint loading.
    engines: trainers built on MONAI's ``SupervisedTrainer`` (distillation, multi-student, semi-supervised, DANN).
    handlers: Ignite handlers (weight averaging, teacher loading, statistics, fidelity/CKA reports, ...).
    inferers: student-ensemble inference.
    metrics: fidelity, linear CKA, calibration and subject-level bootstrap intervals.
    data: MedMNIST ``.npz`` and datalist JSON loaders with seeded splits.
    model_card: model cards generated from an evaluation (metrics with intervals, input contract, checksums).
"""

from __future__ import annotations

from monai_kd import data, engines, handlers, inferers, losses, metrics, model_card, networks

__version__ = "0.1.0"

__all__ = ["data", "engines", "handlers", "inferers", "losses", "metrics", "model_card", "networks", "__version__"]
