"""Measures besides accuracy: student-teacher fidelity and linear CKA between layers."""

from __future__ import annotations

from monai_kd.metrics.cka import cka_matrix, linear_cka, save_cka_heatmap
from monai_kd.metrics.fidelity import FidelityMetric, fidelity
from monai_kd.metrics.segmentation import evaluate_segmentation, foreground_dice, pixel_roc_auc

__all__ = [
    "FidelityMetric",
    "cka_matrix",
    "evaluate_segmentation",
    "fidelity",
    "foreground_dice",
    "linear_cka",
    "pixel_roc_auc",
    "save_cka_heatmap",
]
