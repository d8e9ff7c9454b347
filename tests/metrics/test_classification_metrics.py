"""Ignite NLL and calibration-error metrics of the bundles' evaluators, against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine

from monai_kd.handlers import from_engine_stacked
from monai_kd.metrics.classification import CalibrationError, ProbabilityNLL, probability_nll

PROBS = [[0.95, 0.05], [0.65, 0.35], [0.25, 0.75], [0.15, 0.85]]  # mid-bin confidences (float32-safe)
LABELS = [0, 1, 1, 1]  # right, wrong, right, right


def test_probability_nll_by_hand():
    expected = -(math.log(0.95) + math.log(0.35) + math.log(0.75) + math.log(0.85)) / 4
    assert probability_nll(torch.tensor(PROBS), torch.tensor(LABELS)).item() == pytest.approx(expected, rel=1e-6)
    assert probability_nll(torch.tensor([[1.0, 0.0]]), torch.tensor([[1]])).item() == pytest.approx(-math.log(1e-7))


def test_metrics_over_an_evaluator_run_of_two_batches():
    """Decollated engine outputs (a list of per-item dicts, as MONAI evaluators give) in two batches of two."""
    items = [{"pred": torch.tensor(p), "label": torch.tensor([y])} for p, y in zip(PROBS, LABELS)]
    engine = Engine(lambda e, batch: batch)
    transform = from_engine_stacked(["pred", "label"])
    ProbabilityNLL(output_transform=transform).attach(engine, "nll")
    CalibrationError(output_transform=transform).attach(engine, "ece")
    state = engine.run([items[:2], items[2:]])
    # one sample per confidence bin: ECE = mean |correct - confidence| = (0.05 + 0.65 + 0.25 + 0.15) / 4
    assert state.metrics["ece"] == pytest.approx(0.275, abs=1e-6)
    nll = -(math.log(0.95) + math.log(0.35) + math.log(0.75) + math.log(0.85)) / 4
    assert state.metrics["nll"] == pytest.approx(nll)
