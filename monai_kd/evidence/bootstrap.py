# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""The command line every evidence script shares: argparse with ``--seeds`` / ``--quick`` / ``--report-only``,
the seed-count check, logging, and the protocol text taken from the script's docstring."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

__all__ = ["check_seeds", "evidence_parser", "protocol_text", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


def evidence_parser(
    doc: str,
    seeds: Sequence[int] = (0, 1, 2),
    quick: str | None = None,
    report_only: str | None = "only re-render the tables from the results file (no training)",
) -> argparse.ArgumentParser:
    """An argument parser described by the first line of ``doc``, with the flags every protocol has.

    Args:
        doc: the script's module docstring.
        seeds: default of ``--seeds``.
        quick: help of ``--quick`` (a pipeline check, never evidence); ``None``: no ``--quick`` flag.
        report_only: help of ``--report-only``; ``None``: no such flag.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(seeds))
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    if report_only is not None:
        parser.add_argument("--report-only", action="store_true", help=report_only)
    return parser


def check_seeds(parser: argparse.ArgumentParser, seeds: Sequence[int], message: str, minimum: int = 3) -> None:
    """Exit with ``parser.error(message)`` when fewer than ``minimum`` seeds are given (one seed is an anecdote)."""
    if len(seeds) < minimum:
        parser.error(message)


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped log lines naming their logger (``kd_evidence``, ``monai_kd.evidence.stages``, ...)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def protocol_text(doc: str, end: str = "Writes") -> str:
    """The protocol part of a script's docstring (everything before ``end``), stored in ``results.json``."""
    return doc.split(end)[0].strip()
