"""Measures besides accuracy: student-teacher fidelity, linear CKA between layers, calibration and bootstrap intervals."""

from __future__ import annotations

from monai_kd.metrics.cka import cka_matrix, linear_cka, save_cka_heatmap
from monai_kd.metrics.fidelity import FidelityMetric, fidelity
from monai_kd.metrics.uncertainty import bootstrap_ci, expected_calibration_error

__all__ = [
    "FidelityMetric",
    "bootstrap_ci",
    "cka_matrix",
    "expected_calibration_error",
    "fidelity",
    "linear_cka",
    "save_cka_heatmap",
]
