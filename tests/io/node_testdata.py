"""Shared helpers of the node tests: polling, ``monai-kd serve`` as a subprocess, and checking a DICOM SEG
against its source series (references and geometry)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition()`` until it is truthy and return its value; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def serve(work: Path, bundle: Path, port: int, log: Path, *options: str) -> subprocess.Popen:
    """Start ``monai-kd serve`` (``python -m monai_kd.cli serve``) on 127.0.0.1:``port``; wait until it listens."""
    command = [sys.executable, "-m", "monai_kd.cli", "serve", "--work_dir", str(work), "--bundle", str(bundle),
               "--port", str(port), "--min_free_mb", "50", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    before = log.stat().st_size if log.exists() else 0
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT)
    wait_for(lambda: process.poll() is not None or f"on 127.0.0.1:{port}" in log.read_text()[before:], 180,
             "monai-kd serve to listen")
    assert process.poll() is None, log.read_text()[-3000:]
    return process


def seg_problems(seg: pydicom.Dataset, sources: list[pydicom.Dataset]) -> list[str]:
    """What is wrong with a SEG as a segmentation of ``sources`` (empty when it references every source image,
    and each frame lies exactly on the image it references: frame of reference, size, spacing, orientation and
    position)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    first = sources[0]
    problems = []
    referenced_series = seg.ReferencedSeriesSequence[0]
    if referenced_series.SeriesInstanceUID != first.SeriesInstanceUID:
        problems.append(f"references series {referenced_series.SeriesInstanceUID}, not {first.SeriesInstanceUID}")
    if seg.StudyInstanceUID != first.StudyInstanceUID:
        problems.append("not in the source study")
    referenced = {str(i.ReferencedSOPInstanceUID) for i in referenced_series.ReferencedInstanceSequence}
    if referenced != set(by_uid):
        problems.append(f"references {len(referenced)} instances, the series has {len(by_uid)}")
    if seg.FrameOfReferenceUID != first.FrameOfReferenceUID:
        problems.append("another frame of reference")
    if (seg.Rows, seg.Columns) != (first.Rows, first.Columns):
        problems.append(f"frames of {seg.Rows}x{seg.Columns}, source images {first.Rows}x{first.Columns}")
    shared = seg.SharedFunctionalGroupsSequence[0]
    if not np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, first.PixelSpacing, atol=1e-6):
        problems.append("pixel spacing differs")
    if not np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, first.ImageOrientationPatient,
                       atol=1e-6):
        problems.append("orientation differs")
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        if uid not in by_uid:
            problems.append(f"frame {number} derives from an unknown image {uid}")
        elif not np.allclose(position, by_uid[uid].ImagePositionPatient, atol=1e-4):
            problems.append(f"frame {number} at {list(position)}, its source image at {by_uid[uid].ImagePositionPatient}")
    return problems
