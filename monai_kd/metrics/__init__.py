"""Measures besides accuracy: student-teacher fidelity, linear CKA between layers, calibration and bootstrap intervals."""

from __future__ import annotations

from monai_kd.metrics.cka import cka_matrix, linear_cka, save_cka_heatmap
from monai_kd.metrics.fidelity import FidelityMetric, fidelity
from monai_kd.metrics.segmentation import evaluate_segmentation, foreground_dice, pixel_roc_auc
from monai_kd.metrics.uncertainty import bootstrap_ci, expected_calibration_error

__all__ = [
    "FidelityMetric",
    "bootstrap_ci",
    "cka_matrix",
    "evaluate_segmentation",
    "expected_calibration_error",
    "fidelity",
    "foreground_dice",
    "linear_cka",
    "pixel_roc_auc",
    "save_cka_heatmap",
]
