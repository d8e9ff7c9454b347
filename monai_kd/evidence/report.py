# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Cells of the evidence tables: mean ± std over seeds, paired gains and their 95% confidence intervals.

Every interval in a README's generated tables and in ``monai-kd results`` is :func:`~.stats.t_interval` of the
per-seed paired differences, printed by :func:`ci` in a column whose header holds :data:`CI_HEADER` or inline by
:func:`ci_note`; :func:`strip_intervals` removes both, giving back the tables as they were before intervals were
added (the golden-rendering test compares that).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

from monai_kd.evidence.stats import Interval, PairedDifference

__all__ = ["CI_HEADER", "CI_METHOD", "ci", "ci_note", "mean_std", "signed_mean_std", "strip_intervals"]

CI_HEADER = "95% CI"
CI_METHOD = ("95% CI: Student-t interval (n - 1 degrees of freedom) of the mean of the per-seed paired differences; "
             "'–' with fewer than two seeds")
_NOTE = re.compile(r", 95% CI (\[[^\]]*\]|–)")


def mean_std(
    values: Sequence[float | None], digits: int = 3, scale: float = 1.0, single: str = "zero", empty: str = "-"
) -> str:
    """``mean ± std`` (sample std) of ``values`` times ``scale``, ``None`` entries dropped.

    Args:
        values: one value per seed.
        digits: decimals.
        scale: factor, e.g. 100 for percentages.
        single: one value: ``"zero"`` prints ``x ± 0.000``, ``"note"`` prints ``x (1 seed)`` (no made-up spread).
        empty: the cell without values.
    """
    vals = [scale * v for v in values if v is not None]
    if not vals:
        return empty
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f} (1 seed)" if single == "note" else f"{vals[0]:.{digits}f} ± {0.0:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def signed_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``+mean ± std`` of gains (no ``± std`` for one value)."""
    text = f"{statistics.mean(values):+.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def ci(interval: Interval | PairedDifference | None, digits: int = 3, scale: float = 1.0) -> str:
    """``[low, high]`` of a confidence interval times ``scale``; ``–`` when it is undefined (fewer than 2 seeds)."""
    if isinstance(interval, PairedDifference):
        interval = interval.interval
    if interval is None or not interval.defined:
        return "–"
    return f"[{scale * interval.low:.{digits}f}, {scale * interval.high:.{digits}f}]"


def ci_note(interval: Interval | PairedDifference | None, digits: int = 3, scale: float = 1.0) -> str:
    """``, 95% CI [low, high]``: the interval appended to a sentence about a paired gain."""
    return f", {CI_HEADER} {ci(interval, digits, scale)}"


def strip_intervals(markdown: str) -> str:
    """The text without interval columns (header holding :data:`CI_HEADER`) and inline ``, 95% CI [..]`` notes."""
    out: list[str] = []
    drop: set[int] = set()
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if not drop and any(CI_HEADER in c for c in cells) and not set(line) <= set("|-: "):
                drop = {i for i, c in enumerate(cells) if CI_HEADER in c}
            if drop:
                line = "|" + "|".join(c for i, c in enumerate(cells) if i not in drop) + "|"
        else:
            drop = set()
        out.append(_NOTE.sub("", line))
    return "\n".join(out)
