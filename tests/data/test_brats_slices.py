# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Tests of :mod:`monai_kd.data.brats_slices` on the real BraTS sample in ``../shared/data`` and tiny NIfTI files."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_kd.data.brats_slices import _subject_images, brats_slice_datalist, brats_volume_datalist

DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
BRATS = DATA_ROOT / "brats2015-sample"
SPLIT_SUBJECTS = {  # from brats2015-sample/SOURCE.txt
    "train": ["brats_2013_pat0005_1", "brats_2013_pat0006_1"],
    "val": ["brats_2013_pat0003_1", "brats_2013_pat0004_1"],
    "test": ["brats_2013_pat0001_1", "brats_2013_pat0002_1"],
}

needs_data = pytest.mark.skipif(not BRATS.is_dir(), reason=f"shared BraTS data missing: {BRATS}")


def _assert_one_line(exc_info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def _keys(items: list[dict]) -> list[tuple[str, int]]:
    return [(item["subject"], item["slice"]) for item in items]


# --------------------------------------------------------------------------- real data


@needs_data
def test_subjects_never_cross_splits() -> None:
    subjects = {}
    for split, expected in SPLIT_SUBJECTS.items():
        items = brats_slice_datalist(BRATS, split, "t1c")
        subjects[split] = sorted({item["subject"] for item in items})
        assert subjects[split] == expected
        assert _keys(items) == sorted(_keys(items))  # ordered by subject, then slice
        assert len(items) == len(set(_keys(items)))
    assert not set(subjects["train"]) & set(subjects["val"])
    assert not set(subjects["train"]) & set(subjects["test"])
    assert not set(subjects["val"]) & set(subjects["test"])
    first_val = brats_slice_datalist(BRATS, "validation", "flair")[0]  # alias of "val"
    assert first_val["subject"] == SPLIT_SUBJECTS["val"][0]


@needs_data
def test_items_format() -> None:
    items = brats_slice_datalist(BRATS, "val", "flair")
    assert len(items) == 245  # 127 + 118 slices with >= 5% brain
    for item in items:
        assert set(item) == {"image", "label", "subject", "slice", "mask"}
        assert item["image"].shape == (1, 64, 64) and item["image"].dtype == np.float32
        assert item["mask"].shape == (1, 64, 64) and item["mask"].dtype == np.uint8
        assert isinstance(item["label"], np.int64) and item["label"] in (0, 1)
        assert isinstance(item["slice"], int) and 0 <= item["slice"] < 155
    images = np.stack([item["image"] for item in items])
    assert np.isfinite(images).all()
    assert (images[:, :, 0, 0] == 0).all()  # background outside the brain is 0 (not the volume's minimum)
    assert set(np.unique(np.stack([item["mask"] for item in items]))) == {0, 1}


@needs_data
def test_labels_and_masks_match_tumour_masks() -> None:
    items = brats_slice_datalist(BRATS, "val", "flair", tumour_min_pixels=50)
    by_subject: dict[str, list[dict]] = {}
    for item in items:
        by_subject.setdefault(item["subject"], []).append(item)
    for subject, subject_items in by_subject.items():
        folder = BRATS / "validation" / subject
        tumour = np.asanyarray(nib.load(folder / "OTMultiClass.nii.gz").dataobj) > 0
        brain = np.asanyarray(nib.load(folder / "brainmask.nii.gz").dataobj) > 0.5
        kept = [z for z in range(brain.shape[2]) if brain[:, :, z].mean() >= 0.05]
        assert [item["slice"] for item in subject_items] == kept
        for item in subject_items:
            pixels = int(tumour[:, :, item["slice"]].sum())
            assert item["label"] == int(pixels >= 50), (subject, item["slice"], pixels)
            if pixels == 0:
                assert item["mask"].sum() == 0
            if pixels >= 50:
                assert item["mask"].sum() > 0
    labels = np.array([item["label"] for item in items])
    assert labels.sum() == 148 and len(labels) == 245
    stricter = brats_slice_datalist(BRATS, "val", "flair", tumour_min_pixels=1000)
    assert _keys(stricter) == _keys(items)
    assert sum(int(item["label"]) for item in stricter) < labels.sum()


@needs_data
def test_t1c_and_flair_share_slices_and_labels_but_differ() -> None:
    t1c = brats_slice_datalist(BRATS, "val", "t1c")
    flair = brats_slice_datalist(BRATS, "val", "flair")
    assert _keys(t1c) == _keys(flair)
    assert [int(a["label"]) for a in t1c] == [int(b["label"]) for b in flair]
    for a, b in zip(t1c, flair):
        np.testing.assert_array_equal(a["mask"], b["mask"])
    tumour_slice = next(i for i, item in enumerate(t1c) if item["label"] == 1)
    a, b = t1c[tumour_slice]["image"], flair[tumour_slice]["image"]
    assert not np.allclose(a, b)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.95


@needs_data
def test_labelled_and_unlabelled_are_disjoint_and_cover_the_split() -> None:
    full = brats_slice_datalist(BRATS, "val", "flair")
    true_label = {key: int(item["label"]) for key, item in zip(_keys(full), full)}
    labelled = brats_slice_datalist(BRATS, "val", "flair", labelled_fraction=0.1, seed=0, role="labelled")
    unlabelled = brats_slice_datalist(BRATS, "val", "flair", labelled_fraction=0.1, seed=0, role="unlabelled")
    both = brats_slice_datalist(BRATS, "val", "flair", labelled_fraction=0.1, seed=0, role="all")

    assert not set(_keys(labelled)) & set(_keys(unlabelled))
    assert sorted(_keys(labelled) + _keys(unlabelled)) == _keys(full) == _keys(both)
    # class-stratified: round(0.1 * 97) negatives and round(0.1 * 148) positives
    assert np.bincount([int(item["label"]) for item in labelled]).tolist() == [10, 15]
    assert all(int(item["label"]) == true_label[key] for key, item in zip(_keys(labelled), labelled))
    assert all(item["label"] == -1 and "mask" not in item for item in unlabelled)
    assert all("mask" in item for item in labelled)
    labelled_keys = set(_keys(labelled))
    for key, item in zip(_keys(both), both):
        assert int(item["label"]) == (true_label[key] if key in labelled_keys else -1)
    assert brats_slice_datalist(BRATS, "val", "flair", role="unlabelled") == []
    assert _keys(brats_slice_datalist(BRATS, "val", "flair", role="labelled")) == _keys(full)


@needs_data
def test_seeded_determinism_and_same_draw_for_both_contrasts() -> None:
    first = brats_slice_datalist(BRATS, "val", "t1c", labelled_fraction=0.2, seed=3, role="labelled")
    again = brats_slice_datalist(BRATS, "val", "t1c", labelled_fraction=0.2, seed=3, role="labelled")
    assert _keys(first) == _keys(again)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    other_seed = brats_slice_datalist(BRATS, "val", "t1c", labelled_fraction=0.2, seed=4, role="labelled")
    assert _keys(other_seed) != _keys(first)
    flair = brats_slice_datalist(BRATS, "val", "flair", labelled_fraction=0.2, seed=3, role="labelled")
    assert _keys(flair) == _keys(first)


@needs_data
def test_cache_is_used_and_items_are_independent() -> None:
    items = brats_slice_datalist(BRATS, "val", "t1c")
    reference = items[10]["image"].copy()
    items[10]["image"][:] = 99.0
    items[10]["mask"][:] = 7
    hits = _subject_images.cache_info().hits
    again = brats_slice_datalist(BRATS, "val", "t1c")
    assert _subject_images.cache_info().hits == hits + 2  # one hit per subject, no file read
    np.testing.assert_array_equal(again[10]["image"], reference)
    assert again[10]["mask"].max() <= 1


@needs_data
def test_volume_datalist_for_load_imaged() -> None:
    from monai.transforms import LoadImaged

    items = brats_volume_datalist(BRATS, "test", "flair")
    assert [item["subject"] for item in items] == SPLIT_SUBJECTS["test"]
    for item in items:
        assert set(item) == {"image", "label", "brainmask", "subject"}
        assert item["image"].endswith("Flair_subtrMeanDivStd.nii.gz")
        assert item["label"].endswith("OTMultiClass.nii.gz") and item["brainmask"].endswith("brainmask.nii.gz")
        assert all(os.path.isfile(item[k]) for k in ("image", "label", "brainmask"))
    assert brats_volume_datalist(BRATS, "validation", "t1c")[1]["image"].endswith(
        "brats_2013_pat0004_1/T1c_subtrMeanDivStd.nii.gz"
    )
    loaded = LoadImaged(keys=["image", "label"], image_only=True)(items[0])
    assert tuple(loaded["image"].shape) == (240, 240, 155)
    assert set(np.unique(np.asarray(loaded["label"])).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


# --------------------------------------------------------------------------- tiny synthetic dataset

SHAPE = (20, 20, 6)


def _nifti(path: Path, array: np.ndarray) -> None:
    nib.Nifti1Image(array, np.eye(4)).to_filename(path)


def _subject(folder: Path, seed: int, tumour_pixels: dict[int, int]) -> None:
    """A 20x20x6 subject: brain box x 4..14, y 6..12 in slices 1..4 (15% of a slice), slice 5 nearly empty."""
    folder.mkdir(parents=True, exist_ok=True)
    brain = np.zeros(SHAPE, np.uint8)
    brain[4:14, 6:12, 1:5] = 1
    brain[9:11, 9:10, 5] = 1  # 2 pixels = 0.5% of the slice
    tumour = np.zeros(SHAPE, np.float32)
    for z, count in tumour_pixels.items():
        tumour[4:14, 6:12, z].flat[:count] = 2.0
    rng = np.random.default_rng(seed)
    for name, offset in (("T1c_subtrMeanDivStd.nii.gz", 0.0), ("Flair_subtrMeanDivStd.nii.gz", 1.0)):
        image = rng.normal(offset, 1.0, SHAPE).astype(np.float32)
        image[brain == 0] = -3.0  # the files' constant background
        _nifti(folder / name, image)
    _nifti(folder / "brainmask.nii.gz", brain)
    _nifti(folder / "OTMultiClass.nii.gz", tumour)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    for split in ("train", "validation", "test"):
        for s in range(2):
            _subject(tmp_path / split / f"{split}_{s}", seed=s, tumour_pixels={2: 3, 3: 12 + s})
    return tmp_path


def test_toy_labels_slices_and_crop(toy: Path) -> None:
    items = brats_slice_datalist(toy, "test", "t1c", spatial_size=(10, 10), tumour_min_pixels=10)
    assert _keys(items) == [(f"test_{s}", z) for s in range(2) for z in (1, 2, 3, 4)]  # slices 0, 5: < 5% brain
    assert [int(item["label"]) for item in items] == [0, 0, 1, 0] * 2  # slice 2 has only 3 tumour pixels
    assert [int(item["mask"].sum()) for item in items[:4]] == [0, 3, 12, 0]  # crop size = output size: exact
    # square box of side 10 centred on the brain (x 4..14, y 6..12 -> y 4..14), background set to 0
    volume = np.asanyarray(nib.load(toy / "test" / "test_0" / "T1c_subtrMeanDivStd.nii.gz").dataobj)
    expected = volume[4:14, 4:14, 3].copy()
    expected[:, :2] = expected[:, 8:] = 0.0
    np.testing.assert_allclose(items[2]["image"][0], expected, rtol=0, atol=1e-6)

    full = brats_slice_datalist(toy, "test", "t1c", spatial_size=(20, 20), crop_to_brain=False, min_brain_fraction=0.0)
    assert len(full) == 12 and full[0]["image"].shape == (1, 20, 20)
    np.testing.assert_allclose(full[3]["image"][0, 4:14, 6:12], volume[4:14, 6:12, 3], atol=1e-6)
    assert brats_slice_datalist(toy, "test", "t1c", spatial_size=(8, 12))[0]["image"].shape == (1, 8, 12)


def test_toy_cache_follows_file_changes(toy: Path) -> None:
    assert [int(i["label"]) for i in brats_slice_datalist(toy, "train", "flair", tumour_min_pixels=10)][:4] == [
        0,
        0,
        1,
        0,
    ]
    label_file = toy / "train" / "train_0" / "OTMultiClass.nii.gz"
    tumour = np.zeros(SHAPE, np.float32)
    tumour[4:14, 6:12, 1] = 1.0
    _nifti(label_file, tumour)
    stat = label_file.stat()
    os.utime(label_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert [int(i["label"]) for i in brats_slice_datalist(toy, "train", "flair", tumour_min_pixels=10)][:4] == [
        1,
        0,
        0,
        0,
    ]


# --------------------------------------------------------------------------- errors


def test_missing_dataset_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for call in (
        lambda: brats_slice_datalist(missing, "train", "t1c"),
        lambda: brats_volume_datalist(missing, "train", "t1c"),
    ):
        with pytest.raises(FileNotFoundError) as exc_info:
            call()
        _assert_one_line(exc_info, "BraTS dataset folder does not exist", str(missing))


def test_missing_split_folder(toy: Path) -> None:
    (toy / "validation").rename(toy / "valid")
    with pytest.raises(FileNotFoundError) as exc_info:
        brats_slice_datalist(toy, "val", "flair")
    _assert_one_line(exc_info, "split folder does not exist", str(toy / "validation"))


def test_empty_split_folder(toy: Path) -> None:
    empty = toy / "empty_split"
    (toy / "test").rename(empty)
    (toy / "test").mkdir()
    with pytest.raises(FileNotFoundError) as exc_info:
        brats_volume_datalist(toy, "test", "t1c")
    _assert_one_line(exc_info, "No subject folder", str(toy / "test"))


def test_missing_subject_file(toy: Path) -> None:
    (toy / "train" / "train_1" / "brainmask.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as exc_info:
        brats_slice_datalist(toy, "train", "t1c")
    _assert_one_line(exc_info, str(toy / "train" / "train_1"), "brainmask.nii.gz")
    (toy / "test" / "test_0" / "Flair_subtrMeanDivStd.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as exc_info:
        brats_volume_datalist(toy, "test", "flair")
    _assert_one_line(exc_info, str(toy / "test" / "test_0"), "Flair_subtrMeanDivStd.nii.gz")
    assert len(brats_volume_datalist(toy, "test", "t1c")) == 2  # the T1c list does not need the FLAIR file


@pytest.mark.parametrize("split", ["dev", "Train", "", None])
def test_unknown_split(toy: Path, split: str) -> None:
    for call in (lambda: brats_slice_datalist(toy, split, "t1c"), lambda: brats_volume_datalist(toy, split, "t1c")):
        with pytest.raises(ValueError) as exc_info:
            call()
        _assert_one_line(exc_info, f"Unknown split {split!r}", str(toy), "'train'", "'val'", "'test'")


@pytest.mark.parametrize("contrast", ["t2", "T1c", "FLAIR", None])
def test_unknown_contrast(toy: Path, contrast: str) -> None:
    for call in (
        lambda: brats_slice_datalist(toy, "train", contrast),
        lambda: brats_volume_datalist(toy, "train", contrast),
    ):
        with pytest.raises(ValueError) as exc_info:
            call()
        _assert_one_line(exc_info, f"Unknown contrast {contrast!r}", str(toy), "'flair'", "'t1c'")


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_labelled_fraction(toy: Path, fraction: float) -> None:
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "train", "t1c", labelled_fraction=fraction)
    _assert_one_line(exc_info, "labelled_fraction", "(0, 1]", repr(fraction), str(toy))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"role": "target"}, "Unknown role 'target'"),
        ({"role": None}, "Unknown role None"),
        ({"spatial_size": (64,)}, "spatial_size"),
        ({"spatial_size": (0, 64)}, "spatial_size"),
        ({"spatial_size": 64}, "spatial_size"),
        ({"min_brain_fraction": 1.5}, "min_brain_fraction"),
        ({"min_brain_fraction": -0.1}, "min_brain_fraction"),
        ({"tumour_min_pixels": 0}, "tumour_min_pixels"),
        ({"tumour_min_pixels": 2.5}, "tumour_min_pixels"),
    ],
)
def test_bad_options(toy: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "train", "t1c", **kwargs)
    _assert_one_line(exc_info, fragment, str(toy))


def test_no_slice_with_enough_brain(toy: Path) -> None:
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "train", "t1c", min_brain_fraction=0.9)
    _assert_one_line(exc_info, "No axial slice", str(toy / "train"), "min_brain_fraction")


def test_unreadable_and_mismatched_files(toy: Path) -> None:
    broken = toy / "train" / "train_0" / "OTMultiClass.nii.gz"
    broken.write_bytes(b"not a nifti file")
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "train", "t1c")
    _assert_one_line(exc_info, "Cannot read BraTS NIfTI file", str(broken.resolve()))

    _nifti(toy / "test" / "test_1" / "OTMultiClass.nii.gz", np.zeros((20, 20, 5), np.float32))
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "test", "t1c")
    _assert_one_line(exc_info, "OTMultiClass.nii.gz", "brainmask.nii.gz", "(20, 20, 5)", "(20, 20, 6)")

    _nifti(toy / "validation" / "validation_0" / "T1c_subtrMeanDivStd.nii.gz", np.zeros((20, 21, 6), np.float32))
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "val", "t1c")
    _assert_one_line(exc_info, "T1c_subtrMeanDivStd.nii.gz", "(20, 21, 6)", "brainmask.nii.gz")
    _nifti(toy / "validation" / "validation_1" / "Flair_subtrMeanDivStd.nii.gz", np.zeros((20, 20, 6, 2), np.float32))
    with pytest.raises(ValueError) as exc_info:
        brats_slice_datalist(toy, "val", "flair")
    _assert_one_line(exc_info, "Flair_subtrMeanDivStd.nii.gz", "(20, 20, 6, 2)", "3D")
