"""2D slice items from 3D image/label files (``volume_slices``, ``VolumeSliceDataset``) on a real BraTS volume."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from monai_kd.data import VolumeSliceDataset, volume_slices

SUBJECT = ("brats2015-sample", "train")


@pytest.fixture(scope="module")
def flair_files(data_dir):
    folder = sorted(data_dir.joinpath(*SUBJECT).iterdir())[0]
    return folder / "Flair_subtrMeanDivStd.nii.gz", folder / "OTMultiClass.nii.gz"


def test_slices_of_a_real_volume(flair_files):
    image_file, label_file = flair_files
    items = volume_slices(image_file, label_file, spatial_size=(48, 48), min_foreground_fraction=0.1)
    truth = np.asarray(nib.load(label_file).dataobj) > 0
    brain = np.asarray(nib.load(image_file).dataobj)
    brain = brain > brain.min()
    kept = [item["slice"] for item in items]
    assert kept == sorted(kept) and 20 < len(kept) < 155  # empty slices at the top and bottom are dropped
    assert brain[..., kept].sum() > 0.9 * brain.sum()  # ... but nearly all of the brain is kept
    for item in items:
        assert item["image"].shape == item["label"].shape == (1, 48, 48)
        assert item["image"].dtype == np.float32 and set(np.unique(item["label"])) <= {0, 1}
        assert bool(item["label"].any()) == bool(truth[..., item["slice"]].any()) or truth[..., item["slice"]].sum() < 50
    values = np.concatenate([item["image"][item["image"] != 0] for item in items])
    assert abs(values.mean()) < 0.2 and abs(values.std() - 1) < 0.2  # z-scored over the foreground


def test_dataset_mixes_arrays_and_files_and_refuses_bad_files(flair_files, tmp_path):
    image_file, label_file = flair_files
    array_item = {"image": np.zeros((1, 64, 64), np.float32), "label": np.zeros((1, 64, 64), np.uint8)}
    dataset = VolumeSliceDataset([array_item, {"image": str(image_file), "label": str(label_file)}],
                                 transform=lambda item: {**item, "seen": True})
    assert dataset.data[0] is array_item and len(dataset) == 1 + len(volume_slices(image_file, label_file))
    assert dataset[1]["seen"] and dataset[1]["image"].shape == (1, 64, 64)

    short = tmp_path / "short_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((240, 240, 100), np.uint8), np.eye(4)), short)
    with pytest.raises(ValueError, match="same grid"):
        VolumeSliceDataset([{"image": str(image_file), "label": str(short)}])
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 8), np.float32), np.eye(4)), empty)
    with pytest.raises(ValueError, match="no slice with at least 10% foreground"):
        VolumeSliceDataset([{"image": str(empty)}])
