"""DICOM SEG writer: round trip of the real label map, frames aligned with the source slices, IOD validity."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest
from dicom_testdata import dciodvfy_errors, pydicom_file

from monai_kd.io import load_dicom_series
from monai_kd.io.dicom_seg import build_dicom_seg, channel_names, property_type, read_dicom_seg, write_dicom_seg

hd = pytest.importorskip("highdicom")
pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in")

pytest_plugins = ["dicom_testdata"]  # shared fixtures: real series, checkpoint


@pytest.fixture(scope="module")
def label_map(ct_labels):
    """The real TotalSegmentator label map of the CT series as a MetaTensor (LAS, as stored) and its channel_def."""
    from monai.transforms import LoadImage

    labels = LoadImage(image_only=True)(str(ct_labels))
    values = [int(v) for v in np.unique(labels.numpy())]
    channel_def = {str(v): f"structure_{v}" for v in values}
    channel_def.update({"0": "background", "5": "liver", "1": "spleen"})
    return labels, channel_def


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory, ct_series, label_map):
    """SEG of the real label map written for the real CT series."""
    labels, channel_def = label_map
    path = tmp_path_factory.mktemp("seg") / "labels.seg.dcm"
    assert write_dicom_seg(labels, ct_series, path, channel_def, algorithm_name="TotalSegmentator") == str(path)
    return path


def test_round_trip_label_to_seg_to_array(seg_file, ct_series, label_map):
    """NIfTI label map -> SEG -> array: identical voxels, back in the NIfTI's own orientation."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    labels, channel_def = label_map
    volume = read_dicom_seg(seg_file, ct_series, channel_def)
    assert volume.shape == ct_series.spatial_shape
    back = Orientation(axcodes="LAS")(MetaTensor(volume[None], affine=ct_series.affine))
    np.testing.assert_allclose(back.affine.numpy(), labels.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(back[0].numpy(), labels.numpy().astype(np.int64))


def test_seg_frames_line_up_with_source(seg_file, ct_series, label_map):
    """Every segment has one frame per source image, at its position and orientation, referencing it."""
    _, channel_def = label_map
    n_segments = len(channel_names(channel_def))
    seg = pydicom.dcmread(seg_file)
    n_slices = ct_series.spatial_shape[2]
    assert seg.Modality == "SEG" and int(seg.NumberOfFrames) == n_segments * n_slices
    assert seg.SeriesInstanceUID != ct_series.series_uid and seg.StudyInstanceUID == ct_series.study_uid
    assert seg.FrameOfReferenceUID == ct_series.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series.series_uid
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(v) for v in orientation], ct_series.orientation)
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    np.testing.assert_allclose([float(v) for v in spacing.PixelSpacing], ct_series.pixel_spacing)
    source_uids = {
        tuple(np.round(p, 3)): ds.SOPInstanceUID
        for p, ds in zip(ct_series.positions, ct_series.reference_datasets(), strict=True)
    }
    per_segment: dict[int, list] = {}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = tuple(np.round([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], 3))
        referenced = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert source_uids[position] == referenced
        per_segment.setdefault(number, []).append(position)
    assert sorted(per_segment) == list(range(1, n_segments + 1))
    expected = sorted(source_uids)
    assert all(sorted(positions) == expected for positions in per_segment.values())


def test_seg_reads_back_with_highdicom(seg_file, ct_series, label_map):
    _, channel_def = label_map
    seg = hd.seg.segread(seg_file)
    names = channel_names(channel_def)
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == list(names.values())
    liver = seg.get_segment_description(list(names).index(5) + 1)
    assert liver.segmented_property_type.value == "10200004"  # SNOMED CT Liver, found by name
    other = seg.get_segment_description(list(names).index(32) + 1)
    assert (other.segmented_property_type.scheme_designator, other.segmented_property_type.value) == ("99MONAIKD", "32")
    assert seg.SOPInstanceUID not in {ds.SOPInstanceUID for ds in ct_series.reference_datasets()}
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == {ds.SOPInstanceUID for ds in ct_series.reference_datasets()}


def test_seg_passes_dciodvfy(seg_file):
    assert dciodvfy_errors(seg_file) == []


def test_thresholded_ct_seg_and_single_slice_seg_pass_dciodvfy(ct_series, tmp_path):
    """A thresholded (bone / fat) SEG of the real CT and of pydicom's one-slice CT_small: valid and round-trip."""
    channel_def = {"0": "background", "1": "bone", "2": "adipose_tissue", "3": "nothing_found"}
    for series, name in ((ct_series, "ct"), (load_dicom_series(pydicom_file("CT_small.dcm")), "small")):
        volume = series.load()
        labels = np.zeros(series.spatial_shape, np.uint8)
        labels[volume > 300] = 1
        labels[(volume > -150) & (volume < -30)] = 2
        path = write_dicom_seg(labels, series, tmp_path / f"{name}.seg.dcm", channel_def)
        assert dciodvfy_errors(path) == []
        np.testing.assert_array_equal(read_dicom_seg(path, series, channel_def), labels)
        assert int(pydicom.dcmread(path).NumberOfFrames) == 3 * series.spatial_shape[2]  # empty segment kept


def test_seg_of_a_multiframe_source(ct_series, tmp_path):
    """SEG of an enhanced multi-frame CT whose frames are stored out of order: frames map back correctly."""
    datasets = []
    for path, reference in zip(ct_series.files[:6], ct_series.reference_datasets()[:6], strict=True):
        ds = pydicom.dcmread(path)
        ds.decompress()
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, keyword, getattr(reference, keyword))
        ds.SeriesNumber = 1
        datasets.append(ds)
    random.Random(2).shuffle(datasets)
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=2,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
    )
    image.save_as(tmp_path / "enhanced.dcm")
    series = load_dicom_series(tmp_path / "enhanced.dcm")
    labels = (series.load() > 300).astype(np.uint8)
    labels[:, :, 0] = 0  # the first slice in position order is empty
    path = write_dicom_seg(labels, series, tmp_path / "out" / "mf.seg.dcm", {"0": "background", "1": "bone"})
    np.testing.assert_array_equal(read_dicom_seg(path, series), labels)
    assert dciodvfy_errors(path) == []


def test_misaligned_or_unnamed_labels_are_refused(ct_series, label_map):
    labels, channel_def = label_map
    with pytest.raises(ValueError, match="does not match the series shape"):
        build_dicom_seg(np.zeros((512, 512, 19), np.uint8), ct_series, channel_def)
    shifted = labels.affine.numpy().copy()
    shifted[2, 3] += 1.0  # the label map one slice-thickness half off
    with pytest.raises(ValueError, match="not on the grid of the source series"):
        build_dicom_seg(labels.numpy(), ct_series, channel_def, affine=shifted)
    with pytest.raises(ValueError, match=r"label values \[1, 5\] have no name"):
        partial = {k: v for k, v in channel_def.items() if k not in ("1", "5")}
        build_dicom_seg(labels, ct_series, partial)
    with pytest.raises(ValueError, match="integer label values"):
        build_dicom_seg(np.full(ct_series.spatial_shape, 0.5, np.float32), ct_series, channel_def)
    projection = load_dicom_series(pydicom_file("JPEG2000.dcm"))  # secondary capture without patient geometry
    with pytest.raises(ValueError, match="no patient geometry"):
        build_dicom_seg(np.zeros(projection.spatial_shape, np.uint8), projection, channel_def)


def test_property_type_lookup():
    assert property_type("liver", 1).value == "10200004"
    assert property_type("adipose tissue", 2).scheme_designator == "SCT"  # keyword AdiposeTissue
    assert (property_type("kidney_cyst_left", 7).scheme_designator, property_type("kidney_cyst_left", 7).value) == (
        "99MONAIKD",
        "7",
    )
    with pytest.raises(ValueError, match="no foreground label"):
        channel_names({"0": "background"})
