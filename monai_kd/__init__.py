"""monai_kd: knowledge distillation for MONAI.

Subpackages:
    losses: distillation objectives (logit KD, feature KD, mutual learning, multi-teacher KD, composite loss).
    networks: feature taps, teacher weighting strategies, checkpoint loading.
    engines: trainers built on MONAI's ``SupervisedTrainer``.
    handlers: Ignite handlers (weight averaging, ...).
    data: MedMNIST ``.npz`` and datalist JSON loaders with seeded splits.
"""

from __future__ import annotations

from monai_kd import data, engines, handlers, losses, networks

__version__ = "0.1.0"

__all__ = ["data", "engines", "handlers", "losses", "networks", "__version__"]
