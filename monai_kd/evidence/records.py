# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""The records of an evidence run: one ``results.json`` read to resume and rewritten after every record.

The file holds ``runs`` (one record per trained model) and other sections (``selection``, ``details``, ...).
:class:`RecordStore` skips records that are already there and saves after each new one through
:func:`monai_kd.results_file.save_merged_results`, which merges in what other processes sharing the file wrote
meanwhile (e.g. one process per CPU core), so an interrupted or parallel session loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

__all__ = ["RecordStore"]

logger = logging.getLogger(__name__)


class RecordStore:
    """Run records of one results file, with resumable bookkeeping.

    Args:
        output: the ``results.json`` to read (if present) and write.
        key: identity of a run record (records with equal keys are the same run).
        defaults: sections a new file starts with (``runs`` is always there); a file on disk overrides them.
        results: contents already read (e.g. by a caller that keeps its own dictionary): used as they are, in
            place of reading ``output``.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        key: Callable[[dict], Hashable],
        defaults: dict[str, Any] | None = None,
        results: dict[str, Any] | None = None,
    ) -> None:
        self.output = Path(output)
        self.key = key
        self.results: dict[str, Any] = {"runs": [], **(defaults or {})} if results is None else results
        if results is None and self.output.is_file():
            try:
                self.results.update(json.loads(self.output.read_text()))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.output}: not a valid results file ({e}).") from e
        for name, value in (defaults or {}).items():
            self.results.setdefault(name, value)

    @property
    def runs(self) -> list[dict]:
        """The run records."""
        return self.results["runs"]

    @property
    def done(self) -> set:
        """Keys of the recorded runs."""
        return {self.key(r) for r in self.results["runs"]}

    def recorded(self, record: dict) -> bool:
        """Whether a run with the key of ``record`` (a full or partial record) is recorded."""
        return self.key(record) in self.done

    def refresh(self) -> None:
        """Merge in (without writing) what other processes sharing the results file recorded since."""
        from monai_kd.results_file import merge_results  # imports monai_kd.io (MONAI): only when sharing

        if self.output.is_file():
            try:
                merge_results(self.results, json.loads(self.output.read_text()), self.key)
            except json.JSONDecodeError:  # written atomically, so only a foreign file is invalid: keep what we have
                logger.warning("%s: not a valid results file; not merged", self.output)

    def save(self) -> None:
        """Write the results file, merging in the records and section entries other processes wrote since."""
        from monai_kd.results_file import save_merged_results  # imports monai_kd.io (MONAI): only when writing

        save_merged_results(self.output, self.results, self.key)

    def record(self, record: dict) -> bool:
        """Add one run record and save at once, unless a run with its key is already recorded.

        Returns:
            whether the record was added.
        """
        if self.recorded(record):
            return False
        self.results["runs"].append(record)
        logger.info("record %s", {k: v for k, v in record.items() if not isinstance(v, (list, dict))})
        self.save()
        return True
