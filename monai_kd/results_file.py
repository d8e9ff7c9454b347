# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""A ``results.json`` that several evidence processes write at once (e.g. one per CPU core).

The file holds a list of run records under ``runs`` and, optionally, other sections that are dictionaries
(``selection``, ``details``, ...). :func:`save_merged_results` writes it under an exclusive lock after merging
in what other processes wrote since this process read it: records whose key is missing here are appended, and
section entries missing here are added (an entry this process holds is never replaced). The write itself is
atomic (:func:`monai_kd.io.atomic.atomic_paths`), so an interrupted process never leaves a truncated file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from monai_kd.io.atomic import atomic_paths

__all__ = ["merge_results", "save_merged_results"]


def merge_results(results: dict[str, Any], other: dict[str, Any], key: Callable[[dict], Hashable]) -> None:
    """Add to ``results`` (in place) the records and section entries of ``other`` that it lacks.

    Args:
        results: this process's results, with a ``runs`` list.
        other: another copy of the results (e.g. the file on disk).
        key: identity of a run record (records with equal keys are the same run).
    """
    known = {key(r) for r in results["runs"]}
    for record in other.get("runs", []):
        if key(record) not in known:
            results["runs"].append(record)
            known.add(key(record))
    for name, section in other.items():
        if name != "runs" and isinstance(section, dict) and isinstance(results.get(name, {}), dict):
            mine = results.setdefault(name, {})
            for entry, value in section.items():
                mine.setdefault(entry, value)


def save_merged_results(path: str | os.PathLike, results: dict[str, Any], key: Callable[[dict], Hashable]) -> None:
    """Merge the records on disk into ``results`` (in place) and write it to ``path``.

    Args:
        path: the results file; a ``.lock`` file beside it serialises the writers.
        results: this process's results, with a ``runs`` list; updated in place with the records and section
            entries found on disk that it lacks.
        key: identity of a run record (records with equal keys are the same run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            merge_results(results, json.loads(path.read_text()), key)
        with atomic_paths(path) as (tmp,):
            Path(tmp).write_text(json.dumps(results, indent=2) + "\n")
