"""A source marked ``PatientIdentityRemoved`` YES without a ``DeidentificationMethod`` (as de-identified public
data often is) still gives a SEG and an SR with zero ``dciodvfy`` errors: the method is filled honestly."""

from __future__ import annotations

import pydicom
import pytest
from dicom_testdata import KD_BUNDLE, copy_series, dciodvfy_errors, segmentation_bundle

from monai_kd.dicom_inference import infer_dicom
from monai_kd.io.derived import UNRECORDED_DEIDENTIFICATION

pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in", "ignore:.*labels.*:FutureWarning")
pytest_plugins = ["dicom_testdata"]


def _deidentified(ct_dir, folder, method=None):
    def edit(index, ds):
        ds.PatientIdentityRemoved = "YES"
        if method:
            ds.DeidentificationMethod = method
        return ds

    copy_series(ct_dir, folder, edit)
    return folder


def test_seg_and_sr_of_a_source_without_deidentification_method(ct_dir, kd_checkpoint, tmp_path):
    source = _deidentified(ct_dir, tmp_path / "in")
    first = pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True)
    assert first.PatientIdentityRemoved == "YES" and "DeidentificationMethod" not in first
    bundle = segmentation_bundle(tmp_path / "bundle")
    (seg,) = infer_dicom(str(bundle), str(source), str(tmp_path / "seg"))
    sr = infer_dicom(str(KD_BUNDLE), str(source), str(tmp_path / "sr"), ckpt_file=str(kd_checkpoint), force=True)[0]
    for path in (seg, sr):
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"  # the flag is kept, not dropped
        assert ds.DeidentificationMethod == UNRECORDED_DEIDENTIFICATION
        assert dciodvfy_errors(path) == [], path


def test_a_recorded_method_is_copied_from_the_source(ct_dir, tmp_path):
    source = _deidentified(ct_dir, tmp_path / "in", method="DICOM PS3.15 Basic Profile")
    (seg,) = infer_dicom(str(segmentation_bundle(tmp_path / "bundle")), str(source), str(tmp_path / "seg"))
    assert pydicom.dcmread(seg).DeidentificationMethod == "DICOM PS3.15 Basic Profile"
    assert dciodvfy_errors(seg) == []
