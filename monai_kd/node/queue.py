# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""A persistent, crash-safe work queue of DICOM series on disk.

Every state is a folder under ``work_dir`` and every state change is one ``rename`` (atomic on POSIX), so a
``kill -9`` at any moment leaves each series in exactly one state, and a restart (:meth:`WorkQueue.recover`)
resumes from there:

==================================  =================================================================
``tmp/``                            instances being written (removed on restart: they were never acknowledged)
``incoming/<SeriesUID>/<SOP>.dcm``  instances of a series still arriving; a C-STORE is acknowledged only after
                                    its file is renamed here
``queued/<job>/``                   a complete series (its associations ended, then no instance for
                                    ``quiet_time`` seconds), waiting
``active/<job>/``                   a series being processed (moved back to ``queued/`` on restart)
``results/<job>/``                  its outputs; ``.complete`` marks them finished, so a restart delivers the
                                    same files again instead of computing new ones (same SOP Instance UIDs: a
                                    PACS stores a resent result once)
``done/<job>.json``                 the record of a delivered series; written before its folders are removed
``quarantine/<job>/`` + ``.json``   a refused series, its instances and the reason
==================================  =================================================================

``<job>`` is ``<milliseconds since the epoch>-<SeriesInstanceUID>``, so jobs run in the order their series
became complete. Instances of a series that arrive after it was queued start a new job (a second result); set
the quiet time longer than the sender's pauses and retry delay.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Job", "WorkQueue"]

STATES = ("tmp", "incoming", "queued", "active", "results", "done", "quarantine")
COMPLETE = ".complete"


def _safe_name(uid: str) -> str:
    """A UID as a file name (UIDs are digits and dots; anything else is replaced)."""
    name = "".join(c if c.isalnum() or c in ".-_" else "_" for c in uid.strip())[:128]
    if not name.strip("."):
        raise ValueError(f"not a usable UID: {uid!r}")
    return name


def write_json(path: Path, record: dict) -> None:
    """Write a JSON record atomically (temporary file, fsync, rename)."""
    temp = path.with_name(f".tmp-{path.name}")
    with open(temp, "w") as f:
        json.dump(record, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


@dataclass(frozen=True)
class Job:
    """One complete series to process.

    Attributes:
        job_id: ``<ms>-<SeriesInstanceUID>``.
        path: the folder holding the series' instances (``active/<job>``).
        results: the folder of its outputs (``results/<job>``).
    """

    job_id: str
    path: Path
    results: Path

    @property
    def series_uid(self) -> str:
        """The Series Instance UID the job was collected under."""
        return self.job_id.split("-", 1)[1]

    @property
    def has_results(self) -> bool:
        """Whether the outputs were completely written by an earlier run."""
        return (self.results / COMPLETE).is_file()

    def result_files(self) -> list[Path]:
        """The output files (without the completion marker), sorted."""
        return sorted(p for p in self.results.iterdir() if p.is_file() and p.name != COMPLETE)


class WorkQueue:
    """The on-disk queue of a node (see the module docstring for the layout).

    Args:
        root: the work folder (created if missing).
        fsync: flush every received instance to disk before acknowledging it (survives a power loss, not only a
            killed process).
    """

    def __init__(self, root: str | os.PathLike, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.fsync = fsync
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._arrivals: dict[str, float] = {}  # series folder name -> monotonic time of its last instance
        self._not_before: dict[str, float] = {}  # job id -> monotonic time before which it is not claimed again
        self._holders: dict[str, set[object]] = {}  # series folder name -> open associations that sent to it

    def _dir(self, state: str) -> Path:
        return self.root / state

    # -- receiving ---------------------------------------------------------------------------------------------
    def temp_path(self, sop_uid: str) -> Path:
        """A fresh path in ``tmp/`` to write a received instance to before :meth:`add`."""
        return self._dir("tmp") / f"{_safe_name(sop_uid)}.{threading.get_ident()}.{time.monotonic_ns()}.dcm"

    def write_instance(self, data: bytes, series_uid: str, sop_uid: str, holder: object | None = None) -> Path:
        """Store one received instance (bytes of a DICOM file) under its series; durable when this returns.

        Args:
            data: the encoded file (preamble, file meta, dataset).
            series_uid: its Series Instance UID.
            sop_uid: its SOP Instance UID (a resent instance replaces the earlier copy).
            holder: the association that sent it; the series is not complete while that association is open
                (see :meth:`release`), unless it stays silent for ``hold_limit`` seconds.

        Returns:
            The stored path.
        """
        temp = self.temp_path(sop_uid)
        with open(temp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        series = _safe_name(series_uid)
        with self._lock:
            folder = self._dir("incoming") / series
            folder.mkdir(exist_ok=True)
            target = folder / f"{_safe_name(sop_uid)}.dcm"
            os.replace(temp, target)
            self._arrivals[series] = time.monotonic()
            if holder is not None:
                self._holders.setdefault(series, set()).add(holder)
        return target

    def release(self, holder: object) -> None:
        """An association ended: its series become complete a quiet time from now (if nothing else holds them)."""
        now = time.monotonic()
        with self._lock:
            for series, holders in list(self._holders.items()):
                if holder in holders:
                    holders.discard(holder)
                    self._arrivals[series] = now
                    if not holders:
                        del self._holders[series]

    def incoming_series(self) -> list[str]:
        """Series folders still collecting instances."""
        return sorted(p.name for p in self._dir("incoming").iterdir() if p.is_dir())

    def seal_quiet(self, quiet_time: float, hold_limit: float | None = None) -> list[str]:
        """Queue every incoming series that received nothing for ``quiet_time`` seconds and whose sending
        associations have ended (or that received nothing for ``hold_limit`` seconds although one is still open:
        some senders keep idle associations open).

        Returns:
            The new job ids.
        """
        now, sealed = time.monotonic(), []
        hold_limit = max(10 * quiet_time, 60.0) if hold_limit is None else hold_limit
        with self._lock:
            for series in self.incoming_series():
                last = self._arrivals.setdefault(series, now)  # unknown (e.g. after a restart): wait from now
                if now - last < (hold_limit if self._holders.get(series) else quiet_time):
                    continue
                self._holders.pop(series, None)
                job_id = f"{time.time_ns() // 1_000_000:013d}-{series}"
                os.replace(self._dir("incoming") / series, self._dir("queued") / job_id)
                del self._arrivals[series]
                sealed.append(job_id)
            if sealed:
                self._ready.notify_all()
        return sealed

    # -- processing --------------------------------------------------------------------------------------------
    def queued(self) -> list[str]:
        """Queued job ids, oldest first."""
        return sorted(p.name for p in self._dir("queued").iterdir() if p.is_dir())

    def active(self) -> list[str]:
        """Job ids being processed."""
        return sorted(p.name for p in self._dir("active").iterdir() if p.is_dir())

    def claim(self, timeout: float = 1.0) -> Job | None:
        """Take the oldest queued job (moved to ``active/``), waiting up to ``timeout`` seconds for one."""
        with self._lock:
            jobs = self._due()
            if not jobs:
                self._ready.wait(timeout)
                jobs = self._due()
            if not jobs:
                return None
            job_id = jobs[0]
            self._not_before.pop(job_id, None)
            os.replace(self._dir("queued") / job_id, self._dir("active") / job_id)
        return Job(job_id, self._dir("active") / job_id, self._dir("results") / job_id)

    def _due(self) -> list[str]:
        """Queued job ids that may be claimed now, oldest first."""
        now = time.monotonic()
        return [j for j in self.queued() if self._not_before.get(j, 0.0) <= now]

    def requeue(self, job: Job, delay: float = 0.0) -> None:
        """Put a claimed job back in the queue, claimable again after ``delay`` seconds (its results, if complete,
        are kept and delivered next time)."""
        with self._lock:
            os.replace(job.path, self._dir("queued") / job.job_id)
            self._not_before[job.job_id] = time.monotonic() + delay

    def mark_results_complete(self, job: Job) -> None:
        """Record that ``job.results`` holds the finished outputs."""
        (job.results / COMPLETE).touch()
        if self.fsync:
            fd = os.open(job.results, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def finish(self, job: Job, record: dict[str, Any]) -> Path:
        """The job is delivered: write its record to ``done/``, then remove its instances and results."""
        path = self._dir("done") / f"{job.job_id}.json"
        write_json(path, {"job_id": job.job_id, **record})
        shutil.rmtree(job.path, ignore_errors=True)
        shutil.rmtree(job.results, ignore_errors=True)
        return path

    def quarantine(self, job: Job, reason: str, details: dict[str, Any] | None = None) -> Path:
        """Move a refused job's instances to ``quarantine/<job>/`` with ``quarantine/<job>.json`` saying why."""
        target = self._dir("quarantine") / job.job_id
        record = {"job_id": job.job_id, "series_uid": job.series_uid, "reason": reason, **(details or {})}
        write_json(self._dir("quarantine") / f"{job.job_id}.json", record)
        if job.path.exists():
            os.replace(job.path, target)
        shutil.rmtree(job.results, ignore_errors=True)
        return target

    # -- restart -----------------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Bring the folders back to a consistent state after a crash or ``kill -9``.

        Unacknowledged partial writes are removed, interrupted jobs go back to the queue (or are removed when their
        ``done`` record exists), results without a job are removed, and incoming series wait a full quiet time
        from now (their sender may resend the rest).

        Returns:
            Counts of what was found: ``requeued``, ``already_done``, ``incoming``, ``queued``.
        """
        counts = {"requeued": 0, "already_done": 0}
        with self._lock:
            for temp in self._dir("tmp").iterdir():
                temp.unlink(missing_ok=True) if not temp.is_dir() else shutil.rmtree(temp, ignore_errors=True)
            for job_id in self.active():
                if (self._dir("done") / f"{job_id}.json").is_file():
                    shutil.rmtree(self._dir("active") / job_id, ignore_errors=True)
                    shutil.rmtree(self._dir("results") / job_id, ignore_errors=True)
                    counts["already_done"] += 1
                else:
                    os.replace(self._dir("active") / job_id, self._dir("queued") / job_id)
                    counts["requeued"] += 1
            known = set(self.queued())
            for folder in self._dir("results").iterdir():
                if folder.name not in known:
                    shutil.rmtree(folder, ignore_errors=True)
            now = time.monotonic()
            self._arrivals = {series: now for series in self.incoming_series()}
            counts["incoming"] = len(self._arrivals)
            counts["queued"] = len(known)
        return counts

    # -- inspection --------------------------------------------------------------------------------------------
    def done_records(self) -> Iterator[dict]:
        """The records of delivered jobs, oldest first."""
        for path in sorted(self._dir("done").glob("*.json")):
            with open(path) as f:
                yield json.load(f)

    def quarantine_records(self) -> Iterator[dict]:
        """The records of refused jobs, oldest first."""
        for path in sorted(self._dir("quarantine").glob("*.json")):
            with open(path) as f:
                yield json.load(f)

    def idle(self) -> bool:
        """Whether nothing is incoming, queued or active."""
        return not (self.incoming_series() or self.queued() or self.active())
