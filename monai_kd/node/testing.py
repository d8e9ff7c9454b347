# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Helpers to exercise a node: series copies with new UIDs, a receiving storage SCP, free loopback ports.

Used by the tests and ``scripts/bench_node_load.py``; handy to try a node without a PACS.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

__all__ = ["StorageCollector", "free_port", "restamp_series"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def restamp_series(
    source: str | os.PathLike,
    target: str | os.PathLike,
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str | None = None,
    edit: Callable[[int, pydicom.Dataset], pydicom.Dataset | None] | None = None,
) -> list[Path]:
    """Copy a single-series folder as a new series: new Series and SOP Instance UIDs, the given Study UID.

    Anonymised sources with empty UIDs become sendable (a PACS refuses instances without UIDs); the pixel data
    and its transfer syntax are kept as they are.

    Args:
        source: folder of the source series' files.
        target: output folder (created).
        study_uid: Study Instance UID of the copy (default: a new one).
        series_uid: Series Instance UID of the copy (default: a new one).
        description: Series Description of the copy (default: kept).
        edit: ``edit(index, dataset)`` may change a dataset further (return it) or drop it (return ``None``).

    Returns:
        The written files, in the sorted order of the source files.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    written = []
    for index, path in enumerate(sorted(p for p in Path(source).iterdir() if p.is_file())):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if not ds.get("SeriesNumber"):
            ds.SeriesNumber = 1
        if description is not None:
            ds.SeriesDescription = description
        if edit is not None:
            ds = edit(index, ds)
            if ds is None:
                continue
        out = target / f"{index:05d}.dcm"
        ds.save_as(out, enforce_file_format=True)
        written.append(out)
    return written


class StorageCollector:
    """A storage SCP that keeps every instance it receives (a stand-in PACS for a node's results).

    Args:
        folder: where received files are written, as ``<SOPInstanceUID>.dcm``.
        ae_title: its AE title.
        host: address to listen on.
        port: port (``0``: a free one; see :attr:`port`).

    Attributes:
        received: ``(SOPInstanceUID, SOPClassUID, referenced source SeriesInstanceUID or "")`` per C-STORE, in
            arrival order (a resent instance appears twice).
        first_arrival: referenced source SeriesInstanceUID -> ``time.perf_counter()`` of its first result.
    """

    def __init__(self, folder: str | os.PathLike, ae_title: str = "RESULTS", host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title, self.host, self.port = ae_title, host, port or free_port(host)
        self.received: list[tuple[str, str, str]] = []
        self.first_arrival: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        referenced = ds.get("ReferencedSeriesSequence") or ds.get("CurrentRequestedProcedureEvidenceSequence")
        source = ""
        if referenced:
            item = referenced[0]
            source = str(item.get("SeriesInstanceUID") or item.ReferencedSeriesSequence[0].SeriesInstanceUID)
        with self._lock:
            ds.save_as(self.folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            self.received.append((str(ds.SOPInstanceUID), str(ds.SOPClassUID), source))
            self.first_arrival.setdefault(source, time.perf_counter())
        return 0x0000

    def start(self) -> StorageCollector:
        """Start listening (returns at once)."""
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server((self.host, self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StorageCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``AE@host:port``."""
        return f"{self.ae_title}@{self.host}:{self.port}"
