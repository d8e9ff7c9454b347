# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Tests of :func:`monai_kd.data.medmnist_datalist` on the real MedMNIST files in ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from monai_kd.data import medmnist_datalist

DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
PNEUMONIA = DATA_ROOT / "pneumoniamnist"
BREAST = DATA_ROOT / "breastmnist"
ADRENAL = DATA_ROOT / "adrenalmnist3d"

pytestmark = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"shared data folder missing: {DATA_ROOT}")


def _raw(npz_path: Path, key: str) -> np.ndarray:
    with np.load(npz_path) as npz:
        return npz[key]


def _assert_one_line(exc_info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("split, count", [("train", 4708), ("val", 524), ("validation", 524), ("test", 624)])
def test_pneumonia_counts(split: str, count: int) -> None:
    data = medmnist_datalist(PNEUMONIA, split)
    assert len(data) == count
    assert [d["index"] for d in data] == list(range(count))


def test_pneumonia_items_match_raw_file() -> None:
    data = medmnist_datalist(PNEUMONIA, "test")
    raw_images = _raw(PNEUMONIA / "pneumoniamnist.npz", "test_images")
    raw_labels = _raw(PNEUMONIA / "pneumoniamnist.npz", "test_labels")
    assert raw_labels.shape == (624, 1)  # labels shaped (N, 1) in this file

    item = data[17]
    assert set(item) == {"image", "label", "index"}
    assert item["image"].shape == (1, 28, 28)
    assert item["image"].dtype == np.float32
    assert isinstance(item["label"], np.int64) and item["label"].ndim == 0
    assert isinstance(item["index"], int) and item["index"] == 17
    np.testing.assert_allclose(item["image"][0], raw_images[17] / 255.0, rtol=0, atol=1e-7)
    assert item["label"] == raw_labels[17, 0]

    stacked = np.stack([d["image"] for d in data])
    assert stacked.min() == 0.0 and stacked.max() == pytest.approx(254 / 255)
    labels = np.array([d["label"] for d in data])
    assert np.array_equal(np.unique(labels), [0, 1])
    assert np.bincount(labels).tolist() == [234, 390]


def test_pneumonia_train_label_distribution_and_range() -> None:
    data = medmnist_datalist(PNEUMONIA, "train")
    labels = np.array([d["label"] for d in data])
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1214, 3494]
    assert min(float(d["image"].min()) for d in data) == 0.0
    assert max(float(d["image"].max()) for d in data) == 1.0


@pytest.mark.parametrize(
    "split, count, class_counts", [("train", 546, [147, 399]), ("val", 78, [21, 57]), ("test", 156, [42, 114])]
)
def test_breast_counts_from_npz_path(split: str, count: int, class_counts: list[int]) -> None:
    data = medmnist_datalist(BREAST / "breastmnist.npz", split)  # a direct file path; labels shaped (N,)
    assert len(data) == count
    assert all(d["image"].shape == (1, 28, 28) and d["image"].dtype == np.float32 for d in data)
    assert np.bincount([d["label"] for d in data]).tolist() == class_counts
    images = np.stack([d["image"] for d in data])
    assert 0.0 <= images.min() and images.max() <= 1.0


@pytest.mark.parametrize("filename", ["adrenalmnist3d.npz", "adrenalmnist3d"])
def test_adrenal_3d(filename: str) -> None:
    data = medmnist_datalist(ADRENAL, "val", filename=filename)
    assert len(data) == 98
    assert all(d["image"].shape == (1, 28, 28, 28) and d["image"].dtype == np.float32 for d in data)
    # shape masks stored as 0/255 become exactly 0/1
    assert np.array_equal(np.unique(np.stack([d["image"] for d in data])), [0.0, 1.0])
    assert np.bincount([d["label"] for d in data]).tolist() == [76, 22]
    assert len(medmnist_datalist(ADRENAL, "train", filename=filename)) == 1188
    assert len(medmnist_datalist(ADRENAL / "adrenalmnist3d.npz", "test")) == 298


def test_adrenal_3d_64() -> None:
    data = medmnist_datalist(ADRENAL, "val", filename="adrenalmnist3d_64.npz", fraction=0.1, seed=3)
    assert len(data) == 8 + 2  # round(0.1 * 76) + round(0.1 * 22)
    assert data[0]["image"].shape == (1, 64, 64, 64)


def test_adrenal_requires_filename() -> None:
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(ADRENAL, "train")
    _assert_one_line(exc_info, str(ADRENAL), "adrenalmnist3d.npz", "adrenalmnist3d_64.npz", "filename")


# --------------------------------------------------------------------------- fraction


def test_fraction_is_stratified_and_seeded() -> None:
    full = medmnist_datalist(PNEUMONIA, "train")
    subset = medmnist_datalist(PNEUMONIA, "train", fraction=0.1, seed=0)
    indices = [d["index"] for d in subset]
    labels = np.array([d["label"] for d in subset])

    assert np.bincount(labels).tolist() == [121, 349]  # round(0.1 * 1214), round(0.1 * 3494)
    assert indices == sorted(set(indices))  # unique, original order
    for item in subset[:20]:
        np.testing.assert_array_equal(item["image"], full[item["index"]]["image"])
        assert item["label"] == full[item["index"]]["label"]

    again = medmnist_datalist(PNEUMONIA, "train", fraction=0.1, seed=0)
    assert [d["index"] for d in again] == indices
    other = medmnist_datalist(PNEUMONIA, "train", fraction=0.1, seed=1)
    assert [d["index"] for d in other] != indices
    assert np.bincount([d["label"] for d in other]).tolist() == [121, 349]


def test_fraction_keeps_one_per_class() -> None:
    subset = medmnist_datalist(BREAST, "val", fraction=1e-6, seed=0)
    assert sorted(int(d["label"]) for d in subset) == [0, 1]


def test_fraction_one_keeps_everything_in_order() -> None:
    data = medmnist_datalist(BREAST, "train", fraction=1.0, seed=123)
    assert [d["index"] for d in data] == list(range(546))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(BREAST, "train", fraction=fraction)
    _assert_one_line(exc_info, "fraction", "(0, 1]", str(BREAST))


# --------------------------------------------------------------------------- synthetic files


def test_rgb_becomes_channel_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 5, 7, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    path = _write_npz(tmp_path / "rgb.npz", train_images=images, train_labels=labels)
    data = medmnist_datalist(tmp_path, "train")
    assert data[4]["image"].shape == (3, 5, 7)
    for c in range(3):
        np.testing.assert_allclose(data[4]["image"][c], images[4, :, :, c] / 255.0, atol=1e-7)
    assert [int(d["label"]) for d in data] == [0, 1, 2, 0, 1, 2]
    assert medmnist_datalist(path, "train", fraction=0.5)[0]["image"].shape == (3, 5, 7)


def test_cache_follows_file_changes_and_results_are_independent(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    _write_npz(path, test_images=np.zeros((2, 4, 4), np.uint8), test_labels=np.array([[0], [1]], np.uint8))
    first = medmnist_datalist(path, "test")
    first[0]["image"][:] = 7.0  # must not leak into later calls
    assert medmnist_datalist(path, "test")[0]["image"].max() == 0.0

    _write_npz(path, test_images=np.full((3, 4, 4), 255, np.uint8), test_labels=np.array([1, 1, 0], np.uint8))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = medmnist_datalist(path, "test")
    assert len(second) == 3
    assert second[0]["image"].min() == 1.0
    assert [int(d["label"]) for d in second] == [1, 1, 0]


# --------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as exc_info:
        medmnist_datalist(missing, "train")
    _assert_one_line(exc_info, str(missing), "does not exist")


def test_missing_npz_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError) as exc_info:
        medmnist_datalist(missing, "train")
    _assert_one_line(exc_info, str(missing), "does not exist")


def test_folder_without_npz(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(FileNotFoundError) as exc_info:
        medmnist_datalist(tmp_path, "train")
    _assert_one_line(exc_info, str(tmp_path), "No .npz")


def test_unknown_filename_lists_available(tmp_path: Path) -> None:
    _write_npz(tmp_path / "a.npz", train_images=np.zeros((1, 2, 2), np.uint8), train_labels=np.zeros(1, np.uint8))
    with pytest.raises(FileNotFoundError) as exc_info:
        medmnist_datalist(tmp_path, "train", filename="b.npz")
    _assert_one_line(exc_info, str(tmp_path), "'b.npz'", "a.npz")


def test_missing_split_keys(tmp_path: Path) -> None:
    path = _write_npz(
        tmp_path / "partial.npz",
        train_images=np.zeros((2, 3, 3), np.uint8),
        train_labels=np.zeros(2, np.uint8),
        test_images=np.zeros((2, 3, 3), np.uint8),
    )
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(path, "test")
    _assert_one_line(exc_info, str(path), "'test_labels'", "keys present", "'train_images'", "'train_labels'")
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(path, "validation")
    _assert_one_line(exc_info, "'val_images'", "'val_labels'")


@pytest.mark.parametrize("split", ["dev", "Train", "", None])
def test_unknown_split(split: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(BREAST, split)
    _assert_one_line(exc_info, repr(split), str(BREAST), "'train'", "'val'", "'test'")


def test_count_mismatch(tmp_path: Path) -> None:
    path = _write_npz(
        tmp_path / "bad.npz", val_images=np.zeros((5, 3, 3), np.uint8), val_labels=np.zeros((4, 1), np.uint8)
    )
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(path, "val")
    _assert_one_line(exc_info, str(path), "5 images", "4 labels")


def test_multilabel_rejected(tmp_path: Path) -> None:
    path = _write_npz(
        tmp_path / "multi.npz", val_images=np.zeros((2, 3, 3), np.uint8), val_labels=np.zeros((2, 14), np.uint8)
    )
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(path, "val")
    _assert_one_line(exc_info, str(path), "(2, 14)", "multi-label")


def test_not_an_npz(tmp_path: Path) -> None:
    text = tmp_path / "fake.npz"
    text.write_text("definitely not a zip archive")
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(text, "train")
    _assert_one_line(exc_info, str(text), ".npz")
    other = tmp_path / "data.csv"
    other.write_text("1,2,3")
    with pytest.raises(ValueError) as exc_info:
        medmnist_datalist(other, "train")
    _assert_one_line(exc_info, str(other), "not a .npz")


def test_labels_outside_the_class_range_are_named(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    path = _write_npz(tmp_path / "three.npz", train_images=images, train_labels=np.array([0, 1, 2]))
    assert len(medmnist_datalist(path, "train", num_classes=3)) == 3
    with pytest.raises(ValueError, match=r"'train' label 2 is outside the bundle's 2 classes") as info:
        medmnist_datalist(path, "train", num_classes=2)
    assert str(path.resolve()) in str(info.value)


def test_empty_split_is_named(tmp_path: Path) -> None:
    path = _write_npz(
        tmp_path / "empty.npz", val_images=np.zeros((0, 28, 28), dtype=np.uint8), val_labels=np.zeros(0, dtype=np.int64)
    )
    with pytest.raises(ValueError, match="'val' split is empty"):
        medmnist_datalist(path, "val")
