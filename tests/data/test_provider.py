"""Bringing one's own data: the datalist provider, the readers and ``monai-kd datalist``, on real files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from monai_kd.cli_datalist import build_datalist, datalist
from monai_kd.data import DatalistProvider, MedMNISTBenchmark, medmnist_datalist, role_items
from monai_kd.data.readers import AsImaged, load_items


@pytest.fixture(scope="module")
def breast(data_dir):
    archive = np.load(data_dir / "breastmnist" / "breastmnist.npz")
    return archive["train_images"][:12], archive["train_labels"].reshape(-1)[:12]


def _write_pngs(folder, images, labels, mode="L"):
    from PIL import Image

    items = []
    for i, (image, label) in enumerate(zip(images, labels)):
        path = folder / f"img{i:02d}.png"
        array = image if mode == "L" else np.stack([image, image // 2, 255 - image], axis=-1)
        Image.fromarray(array.astype(np.uint8), mode=None).save(path)
        items.append({"image": path.name, "label": int(label), "subject": f"p{i // 2}"})  # two images per person
    return items


def test_png_datalist_gives_the_medmnist_arrays_bit_for_bit(tmp_path, breast, data_dir):
    """BreastMNIST written as PNG files and read through a datalist equals the bundle's own npz items."""
    images, labels = breast
    items = _write_pngs(tmp_path, images, labels)
    (tmp_path / "d.json").write_text(json.dumps({"training": items, "validation": [dict(items[0], subject="v")],
                                                     "test": [dict(items[1], subject="t")]}))
    provider = DatalistProvider(tmp_path / "d.json", spatial_size=(28, 28), channels=1, intensity="unit", num_classes=2)
    train = provider("train")
    reference = medmnist_datalist(data_dir / "breastmnist", "train")[:12]
    assert len(train) == 12
    for mine, theirs in zip(train, reference):
        assert mine["image"].dtype == theirs["image"].dtype == np.float32
        np.testing.assert_array_equal(mine["image"], theirs["image"])
        assert mine["label"] == theirs["label"] and isinstance(mine["label"], np.int64)


def test_colour_to_grey_and_grey_to_colour(tmp_path, breast):
    images, labels = breast
    items = _write_pngs(tmp_path, images[:2], labels[:2], mode="RGB")
    paths = [{"image": str(tmp_path / i["image"]), "label": i["label"]} for i in items]
    grey = load_items(paths, channels=1, reverse_indexing=False)[0]["image"]
    rgb = load_items(paths, channels=3, reverse_indexing=False)[0]["image"]
    a = images[0].astype(np.float32)
    np.testing.assert_allclose(rgb, np.stack([a, a // 2, 255 - a]))
    np.testing.assert_allclose(grey[0], (a + a // 2 + 255 - a) / 3, rtol=1e-6)
    _write_grey(tmp_path / "g.png", images[0])
    repeated = load_items([{"image": str(tmp_path / "g.png")}], channels=3, reverse_indexing=False)[0]["image"]
    np.testing.assert_array_equal(repeated, np.stack([a, a, a]))
    # inference's transform converts the same way
    np.testing.assert_allclose(AsImaged("image", channels=1)({"image": rgb})["image"], grey, rtol=1e-6)


def _write_grey(path, image) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def test_splits_keep_a_persons_images_together(tmp_path, breast):
    images, labels = breast
    items = _write_pngs(tmp_path, images, labels)
    (tmp_path / "d.json").write_text(json.dumps({"training": items}))
    provider = DatalistProvider(tmp_path / "d.json", spatial_size=(28, 28), ratios=(0.5, 0.25, 0.25), seed=3)
    subjects = {role: {i["subject"] for i in provider(role)} for role in ("train", "val", "test")}
    assert all(subjects.values())
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"] or subjects["val"] & subjects["test"])
    assert sum(len(s) for s in subjects.values()) == 6


def test_3d_metaimage_and_nrrd_read_through_itk(tmp_path, data_dir):
    """AdrenalMNIST3D volumes written as MHA and NRRD (ITK) come back as the npz volumes, in MONAI's (x, y, z) order."""
    itk = pytest.importorskip("itk")
    reference = medmnist_datalist(data_dir / "adrenalmnist3d", "test", "adrenalmnist3d.npz")[:2]
    raw = np.load(data_dir / "adrenalmnist3d" / "adrenalmnist3d.npz")["test_images"][:2]
    items = []
    for i, (volume, suffix) in enumerate(zip(raw, (".mha", ".nrrd"))):
        itk.imwrite(itk.image_from_array(np.ascontiguousarray(volume)), str(tmp_path / f"v{i}{suffix}"))
        items.append({"image": f"v{i}{suffix}", "label": int(reference[i]["label"]), "subject": str(i)})
    (tmp_path / "d.json").write_text(json.dumps({"training": [dict(items[0], subject="a")],
                                                 "validation": [dict(items[1], subject="b")], "test": items}))
    loaded = DatalistProvider(tmp_path / "d.json", channels=1, intensity="unit")("test")
    for mine, theirs in zip(loaded, reference):
        assert mine["image"].shape == (1, 28, 28, 28)
        np.testing.assert_array_equal(mine["image"], theirs["image"].transpose(0, 3, 2, 1))  # npz: (z, y, x)


def test_2d_nifti_slice_and_dicom_series(tmp_path, data_dir):
    import nibabel as nib

    slice_ = np.arange(20 * 30, dtype=np.float32).reshape(20, 30, 1)
    nib.save(nib.Nifti1Image(slice_, np.eye(4)), tmp_path / "s.nii.gz")
    (image,) = load_items([{"image": str(tmp_path / "s.nii.gz")}], spatial_size=(20, 30), intensity="unit")
    np.testing.assert_allclose(image["image"][0], slice_[..., 0] / slice_.max(), rtol=1e-6)
    series = data_dir / "totalsegmentator-examples" / "example_ct_dicom"
    (volume,) = load_items([{"image": str(series)}], spatial_size=(64, 64, 10), intensity="unit")
    assert volume["image"].shape == (1, 64, 64, 10) and 0.0 <= volume["image"].min() < volume["image"].max() <= 1.0


def test_bad_data_gets_one_line_errors(tmp_path, breast):
    from PIL import Image

    images, labels = breast
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((20, 28), np.uint8)).save(tmp_path / "a_mask.png")
    with pytest.raises(ValueError, match=r"^Mask .*a_mask.png has size \(28, 20\) but its image .*a.png has size \(28, 28\)"):
        load_items([{"image": str(tmp_path / "a.png"), "label": str(tmp_path / "a_mask.png")}])
    item = {"image": "a.png", "label": 5}
    lists = {key: [dict(item, subject=key)] for key in ("training", "validation", "test")}
    (tmp_path / "d.json").write_text(json.dumps(lists))
    with pytest.raises(ValueError, match=r"a\.png has label 5, outside the bundle's 2 classes"):
        DatalistProvider(tmp_path / "d.json", num_classes=2)("train")
    with pytest.raises(ValueError, match=r"has no 'quiz' list"):
        DatalistProvider(tmp_path / "d.json")("quiz")
    with pytest.raises(ValueError, match=r"set --datalist"):
        DatalistProvider(None)("train")
    (tmp_path / "e.json").write_text(json.dumps({"training": [{"image": "missing.png", "label": 0, "subject": "x"}]}))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        DatalistProvider(tmp_path / "e.json", ratios=(1, 0, 0))("train")


def test_benchmark_when_no_datalist(data_dir):
    provider = DatalistProvider(None, MedMNISTBenchmark(data_dir / "breastmnist", num_classes=2))
    assert len(role_items(provider, "val")) == 78  # BreastMNIST's validation split


def test_datalist_command_matches_masks_labels_and_subjects(tmp_path, retinal_dir, capsys):
    av = retinal_dir / "AV-WIDE"
    items, summary = build_datalist(str(av), "images/*.png", masks="manual/*.png")
    assert summary == {"images": 30, "subjects": 30, "masks": 30, "classes": {}}
    assert all(os.path.basename(i["label"]) == os.path.basename(i["image"])[:-4] + "_vessels.png" for i in items)
    with pytest.raises(ValueError, match="no mask for image .*wide_image_01.png"):
        build_datalist(str(av), "images/*.png", masks="manual/{stem}.png")
    _, summary = build_datalist(str(av), "images/*.png", subject=r"wide_image_(\d)")  # first digit: 4 people
    assert summary["subjects"] == 4
    for name, count in (("benign", 2), ("malignant", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(count):
            (tmp_path / "data" / name / f"{name}{k}.png").write_bytes((av / "images" / "wide_image_01.png").read_bytes())
    out = tmp_path / "d.json"
    datalist(str(tmp_path / "data"), "*/*.png", output=str(out), labels="folder")
    datalist(str(tmp_path / "data"), "malignant/*.png", output=str(out), labels="folder", role="test")
    content = json.loads(out.read_text())
    assert content["classes"] == ["benign", "malignant"]
    assert [i["label"] for i in content["training"]] == [0, 0, 1] and [i["label"] for i in content["test"]] == [1]
    assert content["test"][0]["image"] == os.path.join("data", "malignant", "malignant0.png")  # relative to the file
    assert "'test': 1 images of 1 subjects, classes 0=benign (0), 1=malignant (1)" in capsys.readouterr().out


def test_partition_by_subject_loses_nobody_to_rounding(tmp_path, breast):
    """4 people at 0.8 / 0.1 / 0.1: MONAI's partition_dataset rounds to 3 / 0 / 0; the fourth goes to training."""
    from monai_kd.data import datalist_split

    images, labels = breast
    items = _write_pngs(tmp_path, images[:8], labels[:8])  # p0..p3, two images each
    (tmp_path / "d.json").write_text(json.dumps({"training": items}))
    train = datalist_split(tmp_path / "d.json", "train")
    assert sorted({i["subject"] for i in train}) == ["p0", "p1", "p2", "p3"] and len(train) == 8
    with pytest.raises(ValueError, match="Split 'val' .* is empty"):
        datalist_split(tmp_path / "d.json", "val")


def test_class_names_of_the_data_used(tmp_path, data_dir):
    """Class names for the model card: the datalist's ``classes`` or ``labels``, else the MedMNIST archive's."""
    from monai_kd.data import medmnist_class_names

    assert DatalistProvider(None, MedMNISTBenchmark(data_dir / "breastmnist")).class_names == ["malignant", "normal, benign"]
    assert medmnist_class_names(data_dir / "pneumoniamnist") == ("normal", "pneumonia")
    assert medmnist_class_names(data_dir / "adrenalmnist3d", "adrenalmnist3d_64") == ("normal", "hyperplasia")
    (tmp_path / "organmnist.npz").write_bytes(b"")
    assert medmnist_class_names(tmp_path) is None  # an archive this project does not know: the metadata's names
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps({"training": [], "classes": ["benign", "malignant"]}))
    assert DatalistProvider(listed).class_names == ["benign", "malignant"]
    decathlon = tmp_path / "decathlon.json"
    decathlon.write_text(json.dumps({"training": [], "labels": {"1": "tumour", "0": "background"}}))
    assert DatalistProvider(decathlon).class_names == ["background", "tumour"]
    decathlon.write_text(json.dumps({"training": []}))
    assert DatalistProvider(decathlon).class_names is None
