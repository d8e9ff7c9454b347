"""Inferers that combine several networks (student ensembles)."""

from __future__ import annotations

from monai_kd.inferers.ensemble import (
    StudentEnsembleInferer,
    ensemble,
    max_probability_ensemble,
    mean_probability_ensemble,
    union_ensemble,
)

__all__ = [
    "StudentEnsembleInferer",
    "ensemble",
    "max_probability_ensemble",
    "mean_probability_ensemble",
    "union_ensemble",
]
