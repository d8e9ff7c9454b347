from __future__ import annotations

import numpy as np
import pytest

from monai_kd.metrics import bootstrap_ci, expected_calibration_error


def test_ece_hand_computed():
    # two bins used: confidence 0.9 (2 samples, 1 right -> |0.5 - 0.9| = 0.4) and 0.6 (2 samples, both right ->
    # |1.0 - 0.6| = 0.4): ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(np.zeros((2, 2)), np.zeros(3))


def _accuracy(correct):
    return float(np.mean(correct))


def test_bootstrap_resamples_subjects_not_samples():
    # two people, ten images each: one always right, one always wrong. Resampling people gives accuracy 0, 0.5 or 1
    # only; resampling images would give a narrow interval around 0.5 as if there were 20 independent cases.
    correct = np.array([1.0] * 10 + [0.0] * 10)
    subjects = ["a"] * 10 + ["b"] * 10
    value, low, high = bootstrap_ci(_accuracy, correct, subjects=subjects, n_resamples=500)
    assert value == pytest.approx(0.5) and low == pytest.approx(0.0) and high == pytest.approx(1.0)
    _, low_img, high_img = bootstrap_ci(_accuracy, correct, n_resamples=500)
    assert 0.2 < low_img < 0.5 < high_img < 0.8  # the too-narrow interval of image-level resampling


def test_bootstrap_is_seeded_skips_undefined_resamples_and_checks_input():
    values = np.arange(10.0)
    assert bootstrap_ci(np.mean, values, seed=3) == bootstrap_ci(np.mean, values, seed=3)

    def needs_two_classes(x):
        if len(set(x.tolist())) < 2:
            raise ValueError("one class")
        return 1.0

    value, low, high = bootstrap_ci(needs_two_classes, np.array([0, 1]), subjects=["a", "b"], n_resamples=50)
    assert (value, low, high) == (1.0, 1.0, 1.0)  # resamples with one class were skipped
    with pytest.raises(ValueError, match="length"):
        bootstrap_ci(np.mean, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="subjects"):
        bootstrap_ci(np.mean, np.zeros(3), subjects=["a"])
