# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""The evidence library: what every ``scripts/*_evidence.py`` shares, so each script holds only its protocol and tables.

Modules:
    stats: mean ± std over seeds, paired differences by seed and their Student-t confidence intervals.
    records: :class:`RecordStore`, the ``results.json`` of a run (resume, save after every record, merge with
        other processes).
    stages: :func:`run_stage`, resumable training stages (a run folder with a done marker is skipped), and
        :func:`claim` / :func:`share_runs` / :func:`wait_for`, so that several processes share one evidence run.
    evaluate: evaluation through the bundle's own ``evaluate.json``, and in-process classification scores.
    report: table cells (mean ± std, gains, 95% CI columns) and :func:`strip_intervals`.
    summary: what ``monai-kd results BUNDLE`` prints, and the specs of every bundle's comparisons.
    bootstrap: the shared command line (``--seeds``, ``--quick``, ``--report-only``, logging).

Nothing here imports torch or MONAI at import time (``monai-kd results`` stays fast); ``evaluate`` and
``stages.run_bundle`` import them when called.
"""

from __future__ import annotations

from monai_kd.evidence.bootstrap import check_seeds, evidence_parser, protocol_text, setup_logging
from monai_kd.evidence.records import RecordStore
from monai_kd.evidence.report import CI_HEADER, CI_METHOD, ci, ci_note, mean_std, signed_mean_std, strip_intervals
from monai_kd.evidence.stages import (MARKER, Claimed, StageRun, claim, claim_holder, run_bundle, run_stage,
                                      share_runs, wait_for)
from monai_kd.evidence.stats import Interval, PairedDifference, paired_difference, t_interval, t_quantile
from monai_kd.evidence.summary import SPECS, EvidenceSpec, paired, render_summary, summary

__all__ = [
    "CI_HEADER", "CI_METHOD", "MARKER", "SPECS", "Claimed", "EvidenceSpec", "Interval", "PairedDifference", "RecordStore",
    "StageRun", "check_seeds", "ci", "ci_note", "claim", "claim_holder", "evidence_parser", "mean_std", "paired", "paired_difference",
    "protocol_text", "render_summary", "run_bundle", "run_stage", "setup_logging", "share_runs", "signed_mean_std",
    "strip_intervals", "summary", "t_interval", "t_quantile", "wait_for",
]
