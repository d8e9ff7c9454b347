"""How sure a reported number is: subject-level bootstrap confidence intervals and expected calibration error."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["bootstrap_ci", "expected_calibration_error"]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of the top-1 prediction (Guo et al. 2017), equal-width confidence bins.

    ``ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|`` over bins ``(lo, hi]`` of the top-1 probability.

    Args:
        probs: class probabilities ``(N, C)``.
        labels: class indices ``(N,)``.
        n_bins: number of equal-width bins on ``[0, 1]``.

    Returns:
        the ECE in ``[0, 1]``.

    Raises:
        ValueError: shapes that do not match, or no samples.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or probs.shape[0] == 0:
        raise ValueError(f"expected probs (N, C) and labels (N,) with N > 0, got {probs.shape} and {labels.shape}.")
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    subjects: Sequence | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A metric and its percentile bootstrap confidence interval, resampling subjects (people), not samples.

    Several images of one person are not independent evidence: resampling images would give intervals that are
    too narrow. With ``subjects``, each resample draws subjects with replacement and takes all their samples
    (a cluster bootstrap); without, every sample is its own subject. Resamples on which the metric is undefined
    (it raises ``ValueError`` or returns NaN, e.g. AUC with one class) are skipped.

    Args:
        metric: ``metric(*arrays_subset) -> float``.
        arrays: per-sample arrays, all of the same length (e.g. probabilities and labels).
        subjects: the subject of each sample; ``None``: one subject per sample.
        n_resamples: number of bootstrap resamples.
        level: confidence level of the interval.
        seed: seed of the resampling.

    Returns:
        ``(value, low, high)``: the metric on all samples and the interval bounds (NaN when no resample was defined).

    Raises:
        ValueError: arrays of different lengths, no samples, or ``level`` outside (0, 1).
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0]) if arrays else 0
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_ci needs per-sample arrays of one positive length, got {[len(a) for a in arrays]}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    groups = np.arange(n) if subjects is None else np.asarray([str(s) for s in subjects])
    if len(groups) != n:
        raise ValueError(f"subjects has {len(groups)} entries for {n} samples.")
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        index = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        try:
            value = float(metric(*(a[index] for a in arrays)))
        except ValueError:
            continue
        if np.isfinite(value):
            values.append(value)
    point = float(metric(*arrays))
    if not values:
        return point, float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return point, float(low), float(high)
