"""``infer_dicom`` wiring: the kd classification bundle and a tiny segmentation bundle on real DICOM and NIfTI.

The weights are freshly initialised: these tests check the plumbing (bundle config -> outputs), not results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_testdata import KD_BUNDLE, dciodvfy_errors, files_below, pydicom_file, segmentation_bundle

from monai_kd.dicom_inference import bundle_task, infer_dicom
from monai_kd.io.dicom_seg import read_dicom_seg
from monai_kd.io.dicom_sr import read_classification_sr

pytest.importorskip("highdicom")
pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in", "ignore:.*labels.*:FutureWarning")

pytest_plugins = ["dicom_testdata"]  # shared fixtures: real series, checkpoint


def test_task_from_metadata():
    assert bundle_task({"network_data_format": {"outputs": {"pred": {"format": "classes"}}}}) == "classification"
    assert bundle_task({"network_data_format": {"outputs": {"pred": {"format": "segmentation"}}}}) == "segmentation"
    with pytest.raises(ValueError, match="neither classification nor segmentation"):
        bundle_task({"network_data_format": {"outputs": {"pred": {"format": "embedding"}}}})


def test_kd_bundle_on_real_ct_series(ct_dir, ct_series, kd_checkpoint, tmp_path):
    """A 2D classifier on a CT volume classifies the middle slice; SR + JSON reference it."""
    out = tmp_path / "out"
    written = infer_dicom(str(KD_BUNDLE), str(ct_dir), str(out), ckpt_file=str(kd_checkpoint), force=True)
    stem = ct_series.series_uid
    assert written == [str(out / f"{stem}.sr.dcm"), str(out / f"{stem}.classification.json")]
    assert files_below(out) == sorted(out / name for name in (f"{stem}.sr.dcm", f"{stem}.classification.json"))
    summary = json.loads((out / f"{stem}.classification.json").read_text())
    assert summary["slice_index"] == 10 and summary["series_instance_uid"] == stem
    assert set(summary["probabilities"]) == {"normal", "pneumonia"}
    assert sum(summary["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    middle = ct_series.reference_datasets()[ct_series.frames[10].instance].SOPInstanceUID
    assert summary["source_sop_instance_uids"] == [middle]
    result = read_classification_sr(written[0], ["normal", "pneumonia"])
    assert result["predicted_class"] == summary["predicted_class"]
    assert result["probabilities"] == pytest.approx(summary["probabilities"])
    assert result["series_uid"] == stem and result["source_sop_instance_uids"] == [middle]
    assert dciodvfy_errors(written[0]) == []


def test_kd_bundle_on_single_image_and_nifti(data_dir, kd_checkpoint, tmp_path):
    """pydicom's one-slice CT (2D path) and a real CT NIfTI volume (JSON only, middle of 30 slices)."""
    written = infer_dicom(
        str(KD_BUNDLE), pydicom_file("CT_small.dcm"), str(tmp_path / "a"), ckpt_file=str(kd_checkpoint), force=True
    )
    assert [p.rsplit(".", 2)[-2:] for p in written] == [["sr", "dcm"], ["classification", "json"]]
    assert json.loads(Path(written[1]).read_text())["slice_index"] == 0
    assert dciodvfy_errors(written[0]) == []
    nifti = data_dir / "totalsegmentator-examples" / "example_ct_sm.nii.gz"
    written = infer_dicom(str(KD_BUNDLE), str(nifti), str(tmp_path / "b"), ckpt_file=str(kd_checkpoint), force=True)
    assert written == [str(tmp_path / "b" / "example_ct_sm.classification.json")]
    summary = json.loads((tmp_path / "b" / "example_ct_sm.classification.json").read_text())
    assert summary["slice_index"] == 15 and "series_instance_uid" not in summary


def test_segmentation_bundle_on_real_ct_series(ct_dir, ct_series, tmp_path):
    """Bundle preprocessing (Orientation, Spacing) + sliding window + Invertd: SEG and NIfTI on the source grid."""
    bundle = segmentation_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    written = infer_dicom(str(bundle), str(ct_dir), str(out), modality="CT", nifti=True)
    stem = ct_series.series_uid
    assert written == [str(out / f"{stem}.seg.dcm"), str(out / f"{stem}.seg.nii.gz")]
    assert files_below(out) == sorted(map(type(out), written))
    assert not (bundle / "eval").exists()  # the bundle's SaveImaged was dropped
    channel_def = {"0": "background", "1": "liver", "2": "spleen"}
    labels = read_dicom_seg(written[0], ct_series, channel_def)
    image = nib.load(written[1])
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)
    np.testing.assert_allclose(image.affine, ct_series.affine, atol=1e-4)
    seg = pydicom.dcmread(written[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == stem
    assert int(seg.NumberOfFrames) == 2 * 20
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    assert dciodvfy_errors(written[0]) == []


def test_segmentation_bundle_on_nifti(data_dir, tmp_path):
    """NIfTI in, NIfTI label map out, on the input's grid."""
    nifti = data_dir / "totalsegmentator-examples" / "example_ct_sm.nii.gz"
    bundle = segmentation_bundle(tmp_path / "bundle")
    written = infer_dicom(str(bundle), str(nifti), str(tmp_path / "out"))
    assert written == [str(tmp_path / "out" / "example_ct_sm.seg.nii.gz")]
    source, result = nib.load(nifti), nib.load(written[0])
    assert result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}


def test_timings_of_each_stage(ct_dir, kd_checkpoint, tmp_path):
    """``timings`` gets wall-clock seconds per stage (DICOM and NIfTI input); without it nothing changes."""
    from monai_kd.dicom_inference import TIMING_KEYS

    timings: dict = {}
    written = infer_dicom(str(KD_BUNDLE), str(ct_dir), str(tmp_path / "a"), ckpt_file=str(kd_checkpoint), force=True, timings=timings)
    assert len(written) == 2
    assert set(timings) == set(TIMING_KEYS)
    assert all(isinstance(v, float) and v >= 0 for v in timings.values())
    assert timings["read"] > 0 and timings["inference"] > 0 and timings["write"] > 0
    stages = sum(v for k, v in timings.items() if k != "total")
    assert stages <= timings["total"] + 1e-6
    assert timings["total"] - stages < 0.5 * timings["total"]  # the stages account for most of the run

    seg_timings: dict = {}
    bundle = segmentation_bundle(tmp_path / "bundle")
    nifti = ct_dir.parent / "example_ct_sm.nii.gz"
    infer_dicom(str(bundle), str(nifti), str(tmp_path / "b"), timings=seg_timings)
    assert set(seg_timings) == set(TIMING_KEYS) and seg_timings["read"] > 0  # NIfTI is read by LoadImaged


def test_2d_segmentation_of_a_volume_needs_a_slice_inferer(data_dir, tmp_path):
    """kdml_seg (2D U-Net) segments a volume through its SliceInferer; with a plain inferer it is refused."""
    import shutil

    import torch
    from monai.bundle import ConfigParser

    from monai_kd.io import DicomInputError

    bundle = tmp_path / "kdml_seg"
    shutil.copytree(KD_BUNDLE.parent / "kdml_seg" / "configs", bundle / "configs")
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    ckpt = tmp_path / "student.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)
    nifti = data_dir / "totalsegmentator-examples" / "example_mr_sm.nii.gz"
    written = infer_dicom(str(bundle), str(nifti), str(tmp_path / "a"), ckpt_file=str(ckpt), force=True)  # abdominal MR at 3 mm: outside the contract
    assert nib.load(written[0]).shape == nib.load(nifti).shape

    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["inferer"] = {"_target_": "SimpleInferer"}
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(DicomInputError, match="needs a SliceInferer"):
        infer_dicom(str(bundle), str(nifti), str(tmp_path / "b"), ckpt_file=str(ckpt), force=True)  # abdominal MR at 3 mm: outside the contract
    assert not (tmp_path / "b").exists()


def test_a_photograph_runs_with_the_bundles_2d_overlay_by_default(tmp_path):
    """infer-dicom picks ``configs/inference_2d.json`` for an image without patient geometry, only when the bundle has
    one and no overlay was given; a volume keeps the bundle's ``inference.json``."""
    from types import SimpleNamespace

    from monai_kd.dicom_inference import OVERLAY_2D, overlay_for_series

    photo, volume = SimpleNamespace(is_volume=False, source="photo.dcm"), SimpleNamespace(is_volume=True, source="ct")
    repo = Path(__file__).resolve().parents[2]
    kdml_seg = str(repo / "bundles" / "kdml_seg")
    assert overlay_for_series(kdml_seg, photo) == os.path.join(kdml_seg, OVERLAY_2D)
    assert overlay_for_series(kdml_seg, volume) is None
    assert overlay_for_series(kdml_seg, photo, "mine.json") == "mine.json"  # what the user asked for wins
    assert overlay_for_series(str(repo / "bundles" / "kd"), photo) is None  # the bundle has no 2D overlay
