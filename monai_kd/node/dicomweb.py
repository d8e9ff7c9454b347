# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""``monai-kd infer-dicomweb``: WADO-RS in, a bundle's student, STOW-RS out (dicomweb-client).

The series is retrieved into a temporary folder (in the transfer syntax the server stores, so nothing is
transcoded), checked and segmented/classified exactly as ``monai-kd infer-dicom`` does
(:func:`monai_kd.dicom_inference.infer_dicom`), and the DICOM SEG or SR is stored back into the same study.
Without ``series_uid`` the study's image series are listed with QIDO-RS and one is chosen by ``modality`` /
``description`` (results and other non-image series are skipped).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom

from monai_kd.io.dicom_series import NON_IMAGE_MODALITIES, DicomInputError

__all__ = ["choose_series", "infer_dicomweb"]

MODALITY, DESCRIPTION, SERIES_UID = "00080060", "0008103E", "0020000E"


def _value(item: dict, tag: str) -> str:
    """A DICOM JSON attribute's first value as text (empty when absent)."""
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def choose_series(found: list[dict], modality: str | None = None, description: str | None = None) -> str:
    """The Series Instance UID of the single image series in a QIDO-RS answer matching the selectors.

    Args:
        found: QIDO-RS series results (DICOM JSON).
        modality: keep series of this Modality.
        description: keep series whose Series Description contains this text (case-insensitive).

    Raises:
        DicomInputError: When no series or several series match (the message lists them).
    """
    images = [s for s in found if _value(s, MODALITY).upper() not in NON_IMAGE_MODALITIES]
    matching = [
        s
        for s in images
        if (not modality or _value(s, MODALITY).upper() == modality.strip().upper())
        and (not description or description.strip().lower() in _value(s, DESCRIPTION).lower())
    ]
    if len(matching) == 1:
        return _value(matching[0], SERIES_UID)
    listing = "\n".join(
        f"  - {_value(s, MODALITY)} '{_value(s, DESCRIPTION)}' series_uid={_value(s, SERIES_UID)}" for s in images
    )
    if not matching:
        raise DicomInputError(f"no image series of the study matches; image series found:\n{listing or '  (none)'}")
    raise DicomInputError(f"{len(matching)} image series match; choose one with --series (or narrow --modality / "
                          f"--description):\n{listing}")


def _save(datasets: list[pydicom.Dataset], folder: Path) -> None:
    """Write retrieved datasets as DICOM files (the part's transfer syntax kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, ds in enumerate(datasets):
        if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
            raise DicomInputError(f"retrieved instance {ds.get('SOPInstanceUID', index)} has no transfer syntax")
        ds.save_as(folder / f"{index:05d}.dcm", enforce_file_format=True)


def infer_dicomweb(
    url: str,
    study_uid: str,
    bundle: str,
    series_uid: str | None = None,
    modality: str | None = None,
    description: str | None = None,
    ckpt_file: str | None = None,
    output: str | os.PathLike | None = None,
    store: bool = True,
    device: str = "cpu",
    client: Any = None,
    force: bool = False,
    overlay: str | list[str] | None = None,
    override: dict[str, Any] | None = None,
    segment_names: list[str] | None = None,
) -> dict[str, Any]:
    """Retrieve a series by WADO-RS, run the bundle's student on it, store the result by STOW-RS.

    Args:
        url: DICOMweb service root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        study_uid: Study Instance UID.
        bundle: bundle folder.
        series_uid: Series Instance UID (default: chosen with ``modality`` / ``description``).
        modality: series selector when ``series_uid`` is not given.
        description: series selector when ``series_uid`` is not given.
        ckpt_file: student weights; default the bundle's ``models/model.pt``.
        output: keep the outputs in this folder (default: a temporary folder, removed afterwards).
        store: STOW-RS the DICOM outputs back to ``url``.
        device: torch device.
        client: a ``dicomweb_client.DICOMwebClient`` to use instead of one for ``url``.
        force: run on a series outside the bundle's input contract (the outputs record the override).
        overlay: config file(s) layered over the bundle's ``inference.json`` (see
            :func:`~monai_kd.dicom_inference.infer_dicom`).
        override: config overrides, e.g. ``{"in_channels": 3}``.
        segment_names: names of a segmentation's labels 1, 2, ... in the SEG (see
            :func:`~monai_kd.dicom_inference.infer_dicom`).

    Returns:
        ``{"study_uid", "series_uid", "instances", "outputs", "stored_sop_instance_uids", "seconds"}``.

    Raises:
        DicomInputError: When the series cannot be chosen or used; ``requests`` errors when the server fails.
    """
    from dicomweb_client.api import DICOMwebClient

    from monai_kd.dicom_inference import infer_dicom

    start = time.perf_counter()
    client = client or DICOMwebClient(url=url.rstrip("/"))
    if not series_uid:
        series_uid = choose_series(client.search_for_series(study_instance_uid=study_uid), modality, description)
    datasets = client.retrieve_series(study_uid, series_uid, media_types=(("application/dicom", "*"),))
    if not datasets:
        raise DicomInputError(f"series {series_uid} of study {study_uid} has no instances at {url}")
    with tempfile.TemporaryDirectory(prefix="monai_kd_dicomweb_") as tmp:
        _save(datasets, Path(tmp) / "series")
        out = Path(output) if output is not None else Path(tmp) / "out"
        written = infer_dicom(bundle, str(Path(tmp) / "series"), str(out), series_uid=series_uid, ckpt_file=ckpt_file,
                              device=device, force=force, overlay=overlay, segment_names=segment_names,
                              **(override or {}))
        results = [pydicom.dcmread(p) for p in written if p.endswith(".dcm")]
        stored = []
        if store and results:
            response = client.store_instances(results)
            failed = response.get("FailedSOPSequence") if response is not None else None
            if failed:
                raise RuntimeError(f"STOW-RS to {url} refused {len(failed)} instance(s): {failed}")
            stored = [str(ds.SOPInstanceUID) for ds in results]
    return {
        "study_uid": study_uid,
        "series_uid": series_uid,
        "instances": len(datasets),
        "outputs": written if output is not None else [Path(p).name for p in written],
        "stored_sop_instance_uids": stored,
        "seconds": round(time.perf_counter() - start, 3),
    }
