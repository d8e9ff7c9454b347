"""Geometry of DICOM series on real files: slice order, gaps, orientation, rescale, agreement with SimpleITK/ITK."""

from __future__ import annotations

import random
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from dicom_testdata import copy_series, pydicom_file, raw_slice

from monai_kd.io import DicomInputError, DicomSeriesReader, list_series, load_dicom_series

pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in")

pytest_plugins = ["dicom_testdata"]  # shared fixtures: real series, checkpoint


def test_real_ct_volume_and_affine(ct_series):
    """512x512x20 CT, 0.977 mm pixels, 2 mm steps, slices in increasing z, RAS affine as MONAI's readers."""
    assert ct_series.spatial_shape == (512, 512, 20)
    volume = ct_series.load()
    assert volume.shape == (512, 512, 20) and volume.dtype == np.float32
    z = ct_series.positions[:, 2]
    assert np.all(np.diff(z) == 2.0) and z[0] == -804.5
    expected = np.array(
        [[-0.9765625, 0, 0, 249.51171875], [0, -0.9765625, 0, 437.51171875], [0, 0, 2.0, -804.5], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(ct_series.affine, expected)
    assert ct_series.modality == "CT" and ct_series.description == "CT Body 3.0"


def test_matches_simpleitk(ct_dir, ct_series):
    """Same voxels (after rescale) and same geometry as SimpleITK/GDCM reading the same files."""
    sitk = pytest.importorskip("SimpleITK")
    from monai.data.utils import orientation_ras_lps

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_dir)))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), ct_series.load())
    lps = orientation_ras_lps(ct_series.affine)
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    np.testing.assert_allclose(lps[:3, :3], direction, atol=1e-6)
    np.testing.assert_allclose(lps[:3, 3], image.GetOrigin(), atol=1e-6)


def test_monai_loader_with_reader_matches_itkreader(ct_dir, ct_series):
    """A bundle's LoadImaged with DicomSeriesReader registered gives what MONAI's ITKReader gives."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage, LoadImaged

    loader = LoadImaged(keys="image", ensure_channel_first=True, image_only=True)
    loader.register(DicomSeriesReader())
    ours = loader({"image": str(ct_dir)})["image"]
    itk = LoadImage(reader=ITKReader(), image_only=True, ensure_channel_first=True)(str(ct_dir))
    assert ours.shape == itk.shape == (1, 512, 512, 20)
    np.testing.assert_array_equal(ours.numpy(), itk.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), itk.affine.numpy(), atol=1e-5)
    assert ours.meta["space"] == "RAS"


def test_shuffled_slices_give_the_same_volume(ct_dir, ct_series, tmp_path):
    """File names in shuffled order (here: reversed numbering) and a shuffled file list: same volume and affine."""
    files = sorted(ct_dir.iterdir())
    order = list(range(len(files)))
    random.Random(0).shuffle(order)
    target = tmp_path / "shuffled"
    target.mkdir()
    for new_index, old_index in enumerate(order):
        shutil.copyfile(files[old_index], target / f"IM{new_index:04d}")
    for source in (target, [str(files[i]) for i in order]):
        series = load_dicom_series(source)
        np.testing.assert_array_equal(series.load(), ct_series.load())
        np.testing.assert_allclose(series.affine, ct_series.affine)


def test_missing_slice_is_refused(ct_dir, tmp_path):
    copy_series(ct_dir, tmp_path / "gap", edit=lambda i, ds: None if i == 7 else ds)
    with pytest.raises(DicomInputError, match=r"uneven slice spacing.*4\.000 mm apart.*step is 2\.000 mm.*missing"):
        load_dicom_series(tmp_path / "gap")


def test_mixed_orientation_is_refused(ct_dir, tmp_path):
    def tilt(index: int, ds: pydicom.Dataset) -> pydicom.Dataset:
        if index == 5:  # one image reformatted to a coronal orientation
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        return ds

    copy_series(ct_dir, tmp_path / "mixed", edit=tilt)
    with pytest.raises(DicomInputError, match=r"mixed image orientations.*refusing to stack"):
        load_dicom_series(tmp_path / "mixed")


def test_duplicate_positions_are_refused(ct_dir, tmp_path):
    files = copy_series(ct_dir, tmp_path / "dup")
    ds = pydicom.dcmread(files[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "dup" / "extra", enforce_file_format=True)
    with pytest.raises(DicomInputError, match="two images at the same position"):
        load_dicom_series(tmp_path / "dup")


def test_rescale_is_applied(ct_dir, ct_series, tmp_path):
    """Volume = stored values x slope + intercept, per file (HU for CT); MR without rescale keeps its values."""
    files = sorted(
        ct_dir.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
    )
    volume = ct_series.load()
    for k in (0, 10, 19):
        np.testing.assert_array_equal(volume[:, :, k], raw_slice(files[k]) - 1024.0)

    def rescale(index: int, ds: pydicom.Dataset) -> pydicom.Dataset:
        ds.RescaleSlope, ds.RescaleIntercept = 2.5, -1000
        return ds

    edited = load_dicom_series(copy_series(ct_dir, tmp_path / "slope", edit=rescale))
    np.testing.assert_array_equal(edited.load(), (volume + 1024.0) * 2.5 - 1000)
    mr = load_dicom_series(pydicom_file("MR_small.dcm"))
    np.testing.assert_array_equal(mr.load()[:, :, 0], pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array.T)


def test_enhanced_multiframe_file_matches_the_series(ct_series, tmp_path):
    """A legacy-converted enhanced CT (one multi-frame file, frames shuffled) reads as the single-frame series."""
    hd = pytest.importorskip("highdicom")
    datasets = []
    for path, reference in zip(ct_series.files, ct_series.reference_datasets(), strict=True):
        ds = pydicom.dcmread(path)
        ds.decompress()
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, keyword, getattr(reference, keyword))
        ds.SeriesNumber = 1
        datasets.append(ds)
    random.Random(1).shuffle(datasets)
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=2,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
    )
    image.save_as(tmp_path / "enhanced.dcm")
    series = load_dicom_series(tmp_path / "enhanced.dcm")
    assert series.is_multiframe and len(series.files) == 1
    np.testing.assert_array_equal(series.load(), ct_series.load())
    np.testing.assert_allclose(series.affine, ct_series.affine)


def test_rt_dose_grid_frame_offsets():
    """RT Dose multi-frame: frames placed by GridFrameOffsetVector, values scaled by DoseGridScaling."""
    path = pydicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    series = load_dicom_series(path)
    assert series.spatial_shape == (10, 10, 15)
    np.testing.assert_allclose(series.positions[:, 2] - series.positions[0, 2], np.arange(15) * 5.0)
    np.testing.assert_allclose(series.load(), ds.pixel_array.transpose(2, 1, 0) * float(ds.DoseGridScaling), rtol=1e-6)


def test_single_slice_and_selection(tmp_path):
    """CT_small + MR_small in one folder: two series, chosen by modality, description-less UID or refused."""
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copyfile(pydicom_file(name), tmp_path / name)
    summaries = list_series(tmp_path)
    assert sorted(s.modality for s in summaries) == ["CT", "MR"]
    ct = load_dicom_series(tmp_path, modality="ct")
    assert ct.modality == "CT" and ct.spatial_shape == (128, 128, 1)
    np.testing.assert_allclose(np.diag(ct.affine)[:3], [-0.661468, -0.661468, 5.0])  # SliceThickness as step
    mr_uid = next(s.series_uid for s in summaries if s.modality == "MR")
    assert load_dicom_series(tmp_path, series_uid=mr_uid).modality == "MR"
    with pytest.raises(DicomInputError, match=r"(?s)holds 2 DICOM series; choose one with --modality.*CT.*MR"):
        load_dicom_series(tmp_path)
    with pytest.raises(DicomInputError, match="no series .* matches modality=US"):
        load_dicom_series(tmp_path, modality="US")


def test_description_selector(ct_dir, tmp_path):
    copy_series(ct_dir, tmp_path / "a")
    shutil.copyfile(pydicom_file("CT_small.dcm"), tmp_path / "ct_small.dcm")
    with pytest.raises(DicomInputError, match="2 series .* match modality=CT"):
        load_dicom_series(tmp_path, modality="CT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = load_dicom_series(tmp_path, description="body 3")
    assert series.spatial_shape == (512, 512, 20)


def test_anonymised_uids_are_derived_deterministically(ct_dir, ct_series):
    """The real series has empty Series/Study UIDs: derived (warned), stable, and used for referencing."""
    assert set(ct_series.derived_uids) == {"SeriesInstanceUID", "StudyInstanceUID"}
    with pytest.warns(UserWarning, match="empty SeriesInstanceUID"):
        again = load_dicom_series(ct_dir)
    assert again.series_uid == ct_series.series_uid and again.study_uid == ct_series.study_uid
    references = ct_series.reference_datasets()
    assert {ds.SeriesInstanceUID for ds in references} == {ct_series.series_uid}
    assert [ds.SOPInstanceUID for ds in references] == [
        pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for f in ct_series.files
    ]
    assert pydicom.dcmread(ct_series.files[0], stop_before_pixels=True).SeriesInstanceUID == ""  # input untouched
