"""Volumes written as DICOM image series (``write_dicom_series``), and the BraTS FLAIR DICOM -> SEG check.

Real data: a BraTS FLAIR volume and the TotalSegmentator CT NIfTI. The end-to-end test runs ``infer_dicom`` with
the kdml_seg bundle and freshly initialised (seeded) weights: it checks that DICOM and NIfTI input give the same
segmentation on the same grid, not how good the segmentation is.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import REPO, load_script
from dicom_testdata import dciodvfy_errors

from monai_kd.io import load_dicom_series
from monai_kd.io.atomic import OutputPathError
from monai_kd.io.dicom_image import write_dicom_series

pytest.importorskip("highdicom")
pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in", "ignore:.*labels.*:FutureWarning")

BRATS_SUBJECT = ("brats2015-sample", "test", "brats_2013_pat0001_1")


@pytest.fixture(scope="module")
def flair(data_dir):
    path = data_dir.joinpath(*BRATS_SUBJECT, "Flair_subtrMeanDivStd.nii.gz")
    if not path.is_file():
        pytest.skip(f"BraTS sample not found: {path}")
    return path


def test_brats_flair_round_trip(flair, tmp_path):
    """Same array (up to 16-bit rounding) and affine back, slices sorted by position, valid MR instances."""
    image = nib.load(flair)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    info = write_dicom_series(volume, image.affine, tmp_path / "mr", series_description="FLAIR", protect=flair)
    assert len(info.files) == volume.shape[2] == 155
    series = load_dicom_series(tmp_path / "mr")
    assert series.series_uid == info.series_uid and series.modality == "MR" and series.description == "FLAIR"
    np.testing.assert_allclose(series.affine, image.affine, atol=1e-5)
    restored = series.load() * info.slope + info.intercept
    np.testing.assert_allclose(restored, volume, atol=info.slope / 2 + 1e-5)
    first = pydicom.dcmread(info.files[0])
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert [float(v) for v in first.PixelSpacing] == [1.0, 1.0] and float(first.SliceThickness) == 1.0
    assert first.pixel_array.shape == (240, 240) and first.pixel_array.min() == 0  # the minimum maps to 0
    assert dciodvfy_errors(info.files[0]) == [] and dciodvfy_errors(info.files[-1]) == []


def test_oblique_left_handed_affine(data_dir, tmp_path):
    """A rotated grid whose slice axis points against the slice normal: read back in reverse slice order, same
    world position of every voxel."""
    ct = nib.load(data_dir / "totalsegmentator-examples" / "example_ct_sm.nii.gz")
    volume = np.asarray(ct.dataobj, dtype=np.float32)[:, :, :6]
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, -2.5])  # anisotropic, in-plane rotation, slices going down
    affine[:3, 3] = [10, -20, 30]
    info = write_dicom_series(volume, affine, tmp_path / "ct", modality="CT")
    series = load_dicom_series(tmp_path / "ct")
    flipped = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 5], [0, 0, 0, 1]])  # voxel k -> 5 - k
    np.testing.assert_allclose(series.affine, flipped, atol=1e-4)
    np.testing.assert_allclose(series.load(), volume[:, :, ::-1], atol=info.slope / 2 + 1e-3)  # CT: HU restored
    assert dciodvfy_errors(info.files[0]) == []


@pytest.mark.parametrize(
    "volume, affine, kwargs, message",
    [
        (np.zeros((4, 4)), np.eye(4), {}, "shape"),
        (np.zeros((4, 4, 2)), np.eye(3), {}, "4x4"),
        (np.zeros((4, 4, 2)), np.diag([1.0, 1.0, 0.0, 1.0]), {}, "singular"),
        (np.full((4, 4, 2), np.nan), np.eye(4), {}, "NaN"),
        (np.zeros((4, 4, 2)), np.eye(4), {"modality": "US"}, "not supported"),
    ],
)
def test_bad_input_is_refused_before_writing(volume, affine, kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        write_dicom_series(volume, affine, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_output_inside_protected_input_is_refused(tmp_path):
    source = tmp_path / "input"
    source.mkdir()
    with pytest.raises(OutputPathError):
        write_dicom_series(np.zeros((4, 4, 2)), np.eye(4), source / "dicom", protect=source)
    assert list(source.iterdir()) == []


def test_brats_dicom_seg_matches_nifti_prediction(flair, tmp_path):
    """scripts/brats_dicom_seg.py on one subject: the SEG of the DICOM series equals the NIfTI prediction of the
    same 2D student run slice by slice (the bundle's SliceInferer), on the same grid."""
    from monai.bundle import ConfigParser

    bundle = REPO / "bundles" / "kdml_seg"
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    ckpt = tmp_path / "student.pt"
    torch.save(network.state_dict(), ckpt)
    module = load_script("brats_dicom_seg")
    item = {"image": str(flair), "label": str(flair.parent / "OTMultiClass.nii.gz"), "subject": flair.parent.name}

    record = module.check_subject(item, str(bundle), str(ckpt), tmp_path / "work")

    prediction = nib.load(record["nifti_prediction"])
    from_dicom = nib.load(record["seg_nifti_file"])  # infer-dicom --nifti: the SEG's label map with the series grid
    assert prediction.shape == from_dicom.shape == (240, 240, 155)
    np.testing.assert_allclose(from_dicom.affine, prediction.affine, atol=1e-4)
    a, b = np.asarray(prediction.dataobj), np.asarray(from_dicom.dataobj)
    assert 0.001 < (a > 0).mean() < 0.999  # a non-trivial mask, so the comparison can fail
    assert np.count_nonzero(a != b) <= 1e-4 * a.size  # 16-bit rounding may flip voxels at the decision boundary
    assert record["differing_voxels"] == np.count_nonzero(a != b)  # the SEG itself reads back as that label map
    seg = pydicom.dcmread(record["seg_file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = load_dicom_series(tmp_path / "work" / item["subject"] / "dicom")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert int(seg.NumberOfFrames) == 155 and [s.SegmentLabel for s in seg.SegmentSequence] == ["whole tumour"]
    positions = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
                 for f in seg.PerFrameFunctionalGroupsSequence]
    order = np.lexsort(np.asarray(positions).T[::-1])  # frames in any order: one per source slice position
    np.testing.assert_allclose(np.asarray(positions)[order], series.positions, atol=1e-4)
    assert record["dciodvfy_errors"] == {"mr_first": 0, "seg": 0}
