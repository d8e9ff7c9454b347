"""Classification SR: content (class, probabilities, references) and IOD validity."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_testdata import dciodvfy_errors, pydicom_file

from monai_kd.io import load_dicom_series
from monai_kd.io.dicom_sr import build_classification_sr, read_classification_sr, write_classification_sr

pytest.importorskip("highdicom")
pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in")

CLASSES = ["normal", "pneumonia"]

pytest_plugins = ["dicom_testdata"]  # shared fixtures: real series, checkpoint


def test_sr_content_for_a_classified_slice(ct_series, tmp_path):
    path = write_classification_sr(
        [0.25, 0.75],
        CLASSES,
        ct_series,
        tmp_path / "a.sr.dcm",
        slice_index=10,
        algorithm_name="kd",
        algorithm_version="0.1.0",
    )
    result = read_classification_sr(path, CLASSES)
    assert result["predicted_class"] == "pneumonia"
    assert result["probabilities"] == pytest.approx({"normal": 0.25, "pneumonia": 0.75})
    assert result["study_uid"] == ct_series.study_uid and result["series_uid"] == ct_series.series_uid
    slice_uid = ct_series.reference_datasets()[ct_series.frames[10].instance].SOPInstanceUID
    assert result["source_sop_instance_uids"] == [slice_uid]

    ds = pydicom.dcmread(path)
    assert ds.Modality == "SR" and ds.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert ds.StudyInstanceUID == ct_series.study_uid and ds.SeriesInstanceUID != ct_series.series_uid
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(evidence.ReferencedSOPSequence) == 20
    assert read_classification_sr(path)["probabilities"] == pytest.approx({"Normal": 0.25, "pneumonia": 0.75})


def test_sr_passes_dciodvfy(ct_series, tmp_path):
    """SRs for a slice of the real CT, for the whole real series, and for pydicom's CT_small."""
    small = load_dicom_series(pydicom_file("CT_small.dcm"))
    projection = load_dicom_series(pydicom_file("JPEG2000.dcm"))  # 2D image without patient geometry
    assert projection.spatial_shape == (256, 1024) and not projection.is_volume
    paths = [
        write_classification_sr([0.6, 0.4], CLASSES, ct_series, tmp_path / "slice.sr.dcm", slice_index=3),
        write_classification_sr(np.array([0.1, 0.2, 0.7]), ["a", "b", "c"], ct_series, tmp_path / "whole.sr.dcm"),
        write_classification_sr([0.9, 0.1], CLASSES, small, tmp_path / "small.sr.dcm", slice_index=0),
        write_classification_sr([0.3, 0.7], CLASSES, projection, tmp_path / "projection.sr.dcm"),
    ]
    for path in paths:
        assert dciodvfy_errors(path) == [], path
    whole = read_classification_sr(paths[1])
    assert whole["predicted_class"] == "c" and len(whole["source_sop_instance_uids"]) == 20


def test_sr_rejects_bad_probabilities(ct_series):
    with pytest.raises(ValueError, match="2 probabilities for 3 class names"):
        build_classification_sr([0.5, 0.5], ["a", "b", "c"], ct_series)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        build_classification_sr([1.5, -0.5], CLASSES, ct_series)
    with pytest.raises(ValueError, match="slice index 20 outside"):
        build_classification_sr([0.5, 0.5], CLASSES, ct_series, slice_index=20)
