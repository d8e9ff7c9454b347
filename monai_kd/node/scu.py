# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Sending DICOM files by C-STORE (pynetdicom SCU), and ``AE@host:port`` addresses."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom

__all__ = ["DicomAddress", "StoreError", "parse_address", "store_files"]

logger = logging.getLogger("monai_kd.node")


class StoreError(RuntimeError):
    """A C-STORE could not be completed."""


@dataclass(frozen=True)
class DicomAddress:
    """A DICOM application entity: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_address(text: str) -> DicomAddress:
    """Parse ``AE_TITLE@host:port`` (e.g. ``ORTHANC@127.0.0.1:4242``).

    Raises:
        ValueError: When the text is not of that form or the AE title is longer than 16 characters.
    """
    ae, _, rest = str(text).partition("@")
    host, _, port = rest.rpartition(":")
    if not ae or not host or not port.isdigit() or len(ae) > 16:
        raise ValueError(f"'{text}' is not AE_TITLE@host:port (AE title of at most 16 characters)")
    return DicomAddress(ae, host, int(port))


def store_files(
    files: Sequence[str | os.PathLike],
    destination: DicomAddress,
    calling_ae: str = "MONAIKD",
    timeout: float = 60.0,
    retries: int = 2,
) -> list[int]:
    """Send DICOM files to ``destination`` in one association (more if a response is lost).

    Each file is sent in the transfer syntax it is stored in (its SOP class and syntax are proposed). When a
    C-STORE gets no response within ``timeout`` (pynetdicom aborts the association then; under heavy CPU load
    its association thread can take the response before ``send_c_store`` does, pydicom/pynetdicom#842), the
    files from that one on are sent again in a new association, up to ``retries`` times: a receiver stores an
    instance once per SOP Instance UID, so resending is safe.

    Args:
        files: DICOM files.
        destination: the receiving AE.
        calling_ae: our AE title.
        timeout: network and DIMSE timeout in seconds.
        retries: new associations after a lost response.

    Returns:
        The C-STORE status of each file (``0x0000`` success; warnings ``0xB...`` count as stored).

    Raises:
        StoreError: When the association fails or is aborted, or responses are still lost after ``retries``.
    """
    from pynetdicom import AE, build_context

    datasets = [pydicom.dcmread(os.fspath(f)) for f in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in sorted(contexts):
        ae.requested_contexts.append(build_context(sop_class, syntax))
    statuses: list[int] = []
    for attempt in range(retries + 1):
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            raise StoreError(f"association with {destination} failed (rejected, aborted or not reachable)")
        try:
            for ds in datasets[len(statuses):]:
                status = assoc.send_c_store(ds)
                if not status or "Status" not in status:
                    break  # no response: pynetdicom aborted the association
                statuses.append(int(status.Status))
        finally:
            if assoc.is_established:
                assoc.release()
        if len(statuses) == len(datasets):
            return statuses
        lost = files[len(statuses)]
        if attempt < retries:
            logger.warning("no C-STORE response from %s for '%s'; sending the remaining %d file(s) again in a new "
                           "association", destination, lost, len(datasets) - len(statuses))
    raise StoreError(f"no C-STORE response from {destination} for '{lost}' after {retries + 1} association(s)")
