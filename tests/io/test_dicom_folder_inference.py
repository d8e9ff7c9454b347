"""``infer-dicom --all_series``: a folder of studies through one loaded model (issue 15)."""

from __future__ import annotations

import json

import pydicom
import pytest
from dicom_testdata import KD_BUNDLE, copy_series

from monai_kd import dicom_inference
from monai_kd.dicom_inference import infer_dicom, infer_dicom_folder
from monai_kd.io.dicom_series import DicomInputError

pytest.importorskip("highdicom")
pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in", "ignore:.*labels.*:FutureWarning")

pytest_plugins = ["dicom_testdata"]


def make_studies(ct_dir, root, count: int) -> list[str]:
    """``count`` copies of the real CT series as separate studies (new Study/Series/SOP UIDs), in nested folders."""
    uids = []
    for k in range(count):
        series_uid, study_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()

        def edit(index, ds, series_uid=series_uid, study_uid=study_uid):
            ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            return ds

        copy_series(ct_dir, root / f"patient{k}" / "study" / "ct", edit)
        uids.append(series_uid)
    return uids


def test_every_series_of_a_folder_with_one_loaded_model(ct_dir, kd_checkpoint, tmp_path, monkeypatch):
    uids = make_studies(ct_dir, tmp_path / "in", 3)
    built = []
    original = dicom_inference.BundlePredictor.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(dicom_inference.BundlePredictor, "__init__", counting)
    seen, timings = [], {}
    written = infer_dicom_folder(str(KD_BUNDLE), str(tmp_path / "in"), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint), force=True,
                                 timings=timings, progress=lambda done, total, uid: seen.append((done, total, uid)))
    assert len(built) == 1  # one model for the three series
    assert sorted(p.rsplit("/", 1)[1] for p in written) == sorted(
        f"{u}.{suffix}" for u in uids for suffix in ("sr.dcm", "classification.json"))
    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)] and timings["series"] == 3
    # each series gets what a one-series call gives it
    one = infer_dicom(str(KD_BUNDLE), str(tmp_path / "in" / "patient1"), str(tmp_path / "one"), ckpt_file=str(kd_checkpoint), force=True)
    single = json.loads(open(one[1]).read())
    batch = json.loads((tmp_path / "out" / f"{uids[1]}.classification.json").read_text())
    assert batch["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)
    assert batch["series_instance_uid"] == uids[1]


def test_a_bad_series_does_not_stop_the_others(ct_dir, kd_checkpoint, tmp_path):
    uids = make_studies(ct_dir, tmp_path / "in", 2)
    bad = tmp_path / "in" / "patient1" / "study" / "ct"
    for path in sorted(bad.iterdir())[:5]:  # pixel data cut short: headers read, decoding fails
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DicomInputError, match="1 of 2 series or study folders failed"):
        infer_dicom_folder(str(KD_BUNDLE), str(tmp_path / "in"), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint), force=True)
    assert (tmp_path / "out" / f"{uids[0]}.classification.json").is_file()
    assert not list((tmp_path / "out").glob(f"{uids[1]}*"))
