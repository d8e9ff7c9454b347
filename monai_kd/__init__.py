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

import importlib
from typing import Any

__version__ = "0.1.0"

# Subpackages load on first use (PEP 562), so ``monai-kd --help`` and argument errors answer without importing
# torch or MONAI; ``import monai_kd`` then ``monai_kd.data.medmnist_datalist(...)`` (bundle configs) still works.
_SUBMODULES = frozenset({"data", "engines", "handlers", "inferers", "losses", "metrics", "model_card", "networks", "quantization"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"monai_kd.{name}")
    raise AttributeError(f"module 'monai_kd' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Only what is loaded: MONAI's ``ComponentLocator`` (the first ``_target_`` given by class name in a bundle
    # config) runs ``inspect.getmembers`` on every loaded module whose name starts with "monai", which would
    # import every lazy subpackage (engines, handlers: ~1 s of an ``infer-dicom`` start-up).
    return sorted(globals())


__all__ = ["data", "engines", "handlers", "inferers", "losses", "metrics", "model_card", "networks", "quantization", "__version__"]
