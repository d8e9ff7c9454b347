# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Tests of :func:`monai_kd.data.datalist_split` on tiny NIfTI files and the real TotalSegmentator examples."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImaged

from monai_kd.data import datalist_split

DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
TOTALSEG = DATA_ROOT / "totalsegmentator-examples"
N_CASES = 10


def _assert_one_line(exc_info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def _nifti(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.full((4, 5, 3), value, dtype=np.float32), np.eye(4)).to_filename(path)


def _cases(root: Path, n: int = N_CASES, prefix: str = "case") -> list[dict]:
    items = []
    for i in range(n):
        image, label = f"imagesTr/{prefix}_{i}.nii.gz", f"labelsTr/{prefix}_{i}.nii.gz"
        _nifti(root / image, float(i))
        _nifti(root / label, float(i % 2))
        items.append({"image": image, "label": label, "subject": f"{prefix}{i}"})
    return items


def _write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content, indent=2))
    return path


@pytest.fixture
def training_only(tmp_path: Path) -> Path:
    return _write_json(tmp_path / "dataset.json", {"name": "toy", "training": _cases(tmp_path)})


def _names(items: list[dict]) -> list[str]:
    return [Path(item["image"]).name for item in items]


# --------------------------------------------------------------------------- partition


def test_partition_is_disjoint_complete_and_absolute(training_only: Path, tmp_path: Path) -> None:
    splits = {s: datalist_split(training_only, s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    names = [set(_names(splits[s])) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set().union(*names) == {f"case_{i}.nii.gz" for i in range(N_CASES)}
    for item in splits["train"]:
        assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
        assert Path(item["image"]).parent == tmp_path / "imagesTr"
        assert Path(item["label"]).parent == tmp_path / "labelsTr"
        assert Path(item["image"]).name == Path(item["label"]).name
    assert datalist_split(training_only, "validation") == splits["val"]


def test_partition_is_seeded(training_only: Path) -> None:
    first = [_names(datalist_split(training_only, s, seed=0)) for s in ("train", "val", "test")]
    again = [_names(datalist_split(training_only, s, seed=0)) for s in ("train", "val", "test")]
    other = [_names(datalist_split(training_only, s, seed=1)) for s in ("train", "val", "test")]
    assert first == again
    assert first != other
    assert first[0] != [f"case_{i}.nii.gz" for i in range(N_CASES)][:8]  # shuffled, not a prefix


def test_custom_ratios(training_only: Path) -> None:
    sizes = [len(datalist_split(training_only, s, ratios=(0.6, 0.2, 0.2))) for s in ("train", "val", "test")]
    assert sizes == [6, 2, 2]


def test_items_load_with_monai(training_only: Path) -> None:
    item = datalist_split(training_only, "val")[0]
    loaded = LoadImaged(keys=["image", "label"], image_only=True)(item)
    assert tuple(loaded["image"].shape) == (4, 5, 3)
    index = int(Path(item["image"]).name.split("_")[1].split(".")[0])
    assert float(loaded["image"].max()) == float(index)


# --------------------------------------------------------------------------- explicit splits


def test_explicit_validation_and_test(tmp_path: Path) -> None:
    training = _cases(tmp_path, 4, "tr")
    validation = _cases(tmp_path, 2, "va")
    test = _cases(tmp_path, 3, "te")
    path = _write_json(tmp_path / "dataset.json", {"training": training, "validation": validation, "test": test})
    assert _names(datalist_split(path, "train")) == [f"tr_{i}.nii.gz" for i in range(4)]
    assert _names(datalist_split(path, "val")) == [f"va_{i}.nii.gz" for i in range(2)]
    assert _names(datalist_split(path, "test", seed=5)) == [f"te_{i}.nii.gz" for i in range(3)]


def test_explicit_validation_only_carves_test_from_training(tmp_path: Path) -> None:
    training = _cases(tmp_path, N_CASES, "tr")
    validation = _cases(tmp_path, 2, "va")
    path = _write_json(tmp_path / "dataset.json", {"training": training, "validation": validation})
    assert _names(datalist_split(path, "val")) == ["va_0.nii.gz", "va_1.nii.gz"]
    train, test = datalist_split(path, "train"), datalist_split(path, "test")
    assert (len(train), len(test)) == (9, 1)  # 0.8 : 0.1 of the training list
    assert sorted(_names(train) + _names(test)) == sorted(f"tr_{i}.nii.gz" for i in range(N_CASES))
    assert len(datalist_split(path, "train", ratios=(1.0, 0.0, 0.0))) == N_CASES
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "test", ratios=(1.0, 0.0, 0.0))
    _assert_one_line(exc_info, str(path), "'test'", "empty")


def test_decathlon_layout_with_test_paths(tmp_path: Path) -> None:
    training = _cases(tmp_path)
    for i in range(2):
        _nifti(tmp_path / "imagesTs" / f"ts_{i}.nii.gz", 0.0)
    path = _write_json(
        tmp_path / "dataset.json", {"training": training, "test": [f"imagesTs/ts_{i}.nii.gz" for i in range(2)]}
    )
    test = datalist_split(path, "test")
    assert test == [{"image": str(tmp_path / "imagesTs" / f"ts_{i}.nii.gz")} for i in range(2)]
    train, val = datalist_split(path, "train"), datalist_split(path, "val")
    assert (len(train), len(val)) == (9, 1)  # 0.8 : 0.1 of the training list
    assert not set(_names(train)) & set(_names(val))


def _slices(root: Path, patients: int, per_patient: int, field: str = "subject") -> list[dict]:
    """Slice-level items: several images of each patient (the review's case: 2 patients x 10 slices)."""
    items = []
    for p in range(patients):
        for z in range(per_patient):
            image = f"slices/case{p:02d}_z{z:03d}.nii.gz"
            _nifti(root / image, float(z))
            items.append({"image": image, "label": z % 2, field: f"case{p:02d}"})
    return items


@pytest.mark.parametrize("field", ["subject", "patient"])
def test_a_patient_never_lands_in_two_splits(tmp_path: Path, field: str) -> None:
    path = _write_json(tmp_path / "slices.json", {"training": _slices(tmp_path, 2, 10, field)})
    for seed in range(5):
        parts = {s: datalist_split(path, s, ratios=(0.5, 0.0, 0.5), seed=seed) for s in ("train", "test")}
        subjects = {s: {item[field] for item in items} for s, items in parts.items()}
        assert len(subjects["train"]) == len(subjects["test"]) == 1 and not subjects["train"] & subjects["test"]
        assert len(parts["train"]) == len(parts["test"]) == 10  # every slice of a patient goes with the patient
    # ten patients of three slices, 80/10/10: 8 / 1 / 1 patients
    path = _write_json(tmp_path / "ten.json", {"training": _slices(tmp_path, 10, 3)})
    sizes = [len(datalist_split(path, s)) for s in ("train", "val", "test")]
    assert sizes == [24, 3, 3]


def test_items_without_subject_are_refused_unless_declared_distinct(tmp_path: Path) -> None:
    items = [{k: v for k, v in item.items() if k != "subject"} for item in _slices(tmp_path, 2, 10)]
    path = _write_json(tmp_path / "slices.json", {"training": items})
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "train")
    _assert_one_line(exc_info, str(path), "'subject'", "two splits", "subject_key=None")
    assert len(datalist_split(path, "train", subject_key=None)) == 16  # the caller says each item is a person


def test_a_subject_in_two_explicit_lists_is_refused(tmp_path: Path) -> None:
    training = _slices(tmp_path, 3, 2)
    content = {"training": training[:4], "validation": training[2:4], "test": training[4:]}  # case01 in two lists
    path = _write_json(tmp_path / "overlap.json", content)
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "train")
    _assert_one_line(exc_info, str(path), "'case01'", "both")


def test_base_dir_classification_labels_and_dicom_folder(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    (data_root / "series_a").mkdir(parents=True)  # a DICOM series folder
    _nifti(data_root / "b.nii.gz", 1.0)
    json_dir = tmp_path / "configs"
    json_dir.mkdir()
    training = [{"image": "series_a", "label": 1}, {"image": "b.nii.gz", "label": 0}]
    path = _write_json(json_dir / "list.json", {"training": training, "validation": training[:1]})
    # only "validation" is explicit: test is carved from "training" unless its ratio is 0
    train = datalist_split(path, "train", base_dir=data_root, ratios=(1.0, 0.0, 0.0), subject_key=None)
    assert sorted(train, key=lambda item: item["image"]) == [
        {"image": str(data_root / "b.nii.gz"), "label": 0},
        {"image": str(data_root / "series_a"), "label": 1},
    ]
    val = datalist_split(path, "val", base_dir=data_root, subject_key=None)
    assert val == [{"image": str(data_root / "series_a"), "label": 1}]


@pytest.mark.skipif(not TOTALSEG.is_dir(), reason=f"shared data folder missing: {TOTALSEG}")
def test_real_totalsegmentator_dicom_and_nifti(tmp_path: Path) -> None:
    training = [
        {"image": "example_ct_dicom", "label": "example_seg_dicom.nii.gz"},
        {"image": "example_ct_sm.nii.gz", "label": "example_seg.nii.gz"},
    ]
    path = _write_json(tmp_path / "totalseg.json", {"training": training, "validation": [training[1]]})
    train = datalist_split(path, "train", base_dir=TOTALSEG, ratios=(1.0, 0.0, 0.0), subject_key=None)
    train = sorted(train, key=lambda d: d["image"])
    assert train[0] == {
        "image": str(TOTALSEG / "example_ct_dicom"),
        "label": str(TOTALSEG / "example_seg_dicom.nii.gz"),
    }
    assert len(list(Path(train[0]["image"]).iterdir())) == 20  # 20-slice CT series
    assert train[1] == {"image": str(TOTALSEG / "example_ct_sm.nii.gz"), "label": str(TOTALSEG / "example_seg.nii.gz")}
    assert datalist_split(path, "val", base_dir=TOTALSEG, subject_key=None) == [train[1]]


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(FileNotFoundError) as exc_info:
        datalist_split(missing, "train")
    _assert_one_line(exc_info, str(missing), "does not exist")
    with pytest.raises(FileNotFoundError) as exc_info:
        datalist_split(tmp_path, "train")
    _assert_one_line(exc_info, str(tmp_path), "not a file")


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "training": [\n    {"image": "a.nii.gz",}\n  ]\n}\n')
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "train")
    _assert_one_line(exc_info, str(path), "Invalid JSON", "line 3")
    listed = _write_json(tmp_path / "list.json", [{"image": "a.nii.gz"}])
    with pytest.raises(ValueError) as exc_info:
        datalist_split(listed, "train")
    _assert_one_line(exc_info, str(listed), "JSON object", "list")


def test_missing_key_lists_present_keys(training_only: Path) -> None:
    with pytest.raises(ValueError) as exc_info:
        datalist_split(training_only, "train", key="labelled")
    _assert_one_line(exc_info, str(training_only), "'labelled'", "keys present", "'name'", "'training'")


def test_empty_list(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "empty.json", {"training": []})
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "train")
    _assert_one_line(exc_info, str(path), "'training'", "empty")
    path = _write_json(tmp_path / "empty_val.json", {"training": _cases(tmp_path, 2), "validation": []})
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "val")
    _assert_one_line(exc_info, str(path), "'validation'", "empty")


def test_empty_split_after_partition(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "tiny.json", {"training": _cases(tmp_path, 2)})
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "test")
    _assert_one_line(exc_info, str(path), "'test'", "empty", "2 items")


def test_missing_image_path_is_named(tmp_path: Path) -> None:
    validation = _cases(tmp_path, 3, "va")
    validation[1]["image"] = "imagesTr/ghost.nii.gz"
    content = {"training": _cases(tmp_path, 3), "validation": validation, "test": _cases(tmp_path, 1, "te")}
    path = _write_json(tmp_path / "dataset.json", content)
    with pytest.raises(FileNotFoundError) as exc_info:
        datalist_split(path, "val")
    _assert_one_line(exc_info, str(path), str(tmp_path / "imagesTr" / "ghost.nii.gz"), "does not exist", "Image")
    assert len(datalist_split(path, "test")) == 1  # only the requested split is checked


def test_missing_label_path_is_named(tmp_path: Path) -> None:
    training = _cases(tmp_path, 2)
    training[0]["label"] = "labelsTr/ghost.nii.gz"
    path = _write_json(tmp_path / "dataset.json", {"training": training, "validation": _cases(tmp_path, 1, "va")})
    with pytest.raises(FileNotFoundError) as exc_info:
        datalist_split(path, "train", ratios=(1.0, 0.0, 0.0))
    _assert_one_line(exc_info, str(tmp_path / "labelsTr" / "ghost.nii.gz"), "Label")


def test_item_not_a_dict(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "dataset.json", {"training": ["imagesTr/case_0.nii.gz"]})
    with pytest.raises(ValueError) as exc_info:
        datalist_split(path, "train")
    _assert_one_line(exc_info, str(path), "'training'", "dict")


@pytest.mark.parametrize("split", ["dev", "TRAIN", None])
def test_unknown_split(training_only: Path, split: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        datalist_split(training_only, split)
    _assert_one_line(exc_info, repr(split), str(training_only), "'train'", "'val'", "'test'")


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (0.0, 0.0, 0.0), (0.8, -0.1, 0.3), (0.8, float("nan"), 0.1), "abc"])
def test_bad_ratios(training_only: Path, ratios: object) -> None:
    with pytest.raises(ValueError) as exc_info:
        datalist_split(training_only, "train", ratios=ratios)
    _assert_one_line(exc_info, "ratios", str(training_only))
