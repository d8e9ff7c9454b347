"""Intervals of paired differences by seed, against hand-worked values."""

from __future__ import annotations

import math

import pytest

from monai_kd.evidence import ci, ci_note, mean_std, paired_difference, t_interval, t_quantile

# two-sided 95% Student-t quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 30: 2.042, 1000: 1.962}


@pytest.mark.parametrize("df, expected", sorted(T_975.items()))
def test_t_quantile_matches_printed_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=6e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=6e-4)  # symmetric


def test_three_seeds_hand_worked():
    # differences 0.01, 0.02, 0.03: mean 0.02, std sqrt(((-0.01)^2 + 0 + 0.01^2) / 2) = 0.01,
    # half-width t_{0.975, 2} * 0.01 / sqrt(3) = 4.302653 * 0.005773503 = 0.02484138
    interval = t_interval([0.01, 0.02, 0.03])
    assert interval.mean == pytest.approx(0.02) and interval.std == pytest.approx(0.01) and interval.n == 3
    assert interval.low == pytest.approx(0.02 - 0.02484138, abs=1e-7)
    assert interval.high == pytest.approx(0.02 + 0.02484138, abs=1e-7)
    assert ci(interval) == "[-0.005, 0.045]"  # consistent gains, but three seeds cannot exclude 0
    assert ci(interval, digits=2, scale=100.0) == "[-0.48, 4.48]"


def test_paired_difference_uses_the_shared_seeds_only():
    method = {0: 0.90, 1: 0.80, 2: 0.85, 3: 0.70}
    baseline = {0: 0.88, 1: 0.76, 2: 0.85, 4: 0.50}  # seed 3 has no baseline, seed 4 no method
    diff = paired_difference(method, baseline)
    assert diff.seeds == (0, 1, 2)
    assert diff.differences == pytest.approx((0.02, 0.04, 0.0))
    assert diff.wins == 2 and diff.n == 3
    # mean 0.02, std 0.02, half-width 4.302653 * 0.02 / sqrt(3) = 0.04968276
    assert diff.interval.low == pytest.approx(-0.02968276, abs=1e-7)
    assert ci_note(diff) == ", 95% CI [-0.030, 0.070]"


def test_one_seed_has_no_interval_and_no_seed_no_difference():
    one = paired_difference({0: 0.9}, {0: 0.8, 1: 0.7})
    assert one.n == 1 and not one.interval.defined and math.isnan(one.interval.low)
    assert ci(one) == "–"
    none = paired_difference({0: 0.9}, {1: 0.8})
    assert none.n == 0 and none.interval is None and ci(none) == "–"
    assert paired_difference({0: None}, {0: 0.8}).n == 0  # a missing metric is not a zero


def test_mean_std_cells():
    assert mean_std([0.80, 0.90, 0.85]) == "0.850 ± 0.050"
    assert mean_std([0.5]) == "0.500 ± 0.000" and mean_std([0.5], single="note") == "0.500 (1 seed)"
    assert mean_std([0.5, None, 0.7], digits=2, scale=100.0) == "60.00 ± 14.14"
    assert mean_std([], empty="–") == "–"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one value"):
        t_interval([])
    with pytest.raises(ValueError, match="level"):
        t_interval([0.1, 0.2], level=95)
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 3)
