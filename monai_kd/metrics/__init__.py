"""Measures besides accuracy: student-teacher fidelity and linear CKA between layers."""

from __future__ import annotations

from monai_kd.metrics.cka import cka_matrix, linear_cka, save_cka_heatmap
from monai_kd.metrics.fidelity import FidelityMetric, fidelity

__all__ = ["FidelityMetric", "cka_matrix", "fidelity", "linear_cka", "save_cka_heatmap"]
