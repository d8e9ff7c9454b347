"""The "Your own data" sections of the bundle READMEs, run as a user runs them: files on disk, documented commands only.

Each bundle gets a real data set it does not use itself, converted here into the files a user would have (never into
the repository): AV-WIDE fundus photographs as JPEG with PNG vessel masks for the 2D segmentation bundle (kdml_seg),
BreastMNIST as grey PNG files in one folder per class for the classifiers. The commands are the READMEs' with tiny
epoch counts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def monai_kd(*args: str) -> subprocess.CompletedProcess:
    """``monai-kd ARGS`` (the console script is ``monai_kd.cli:main``), run from the repository root."""
    return subprocess.run([sys.executable, "-m", "monai_kd.cli", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=1800)


def monai_bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=1800)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def fundus_jpegs(tmp_path_factory, retinal_dir) -> Path:
    """Twelve AV-WIDE fundus photographs as a user would have them: colour JPEG images, PNG vessel masks."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("fundus")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    for image in sorted((retinal_dir / "AV-WIDE" / "images").glob("*.png"))[:12]:
        Image.open(image).convert("RGB").save(folder / "images" / f"{image.stem}.jpg", quality=95)
        mask = retinal_dir / "AV-WIDE" / "manual" / f"{image.stem}_vessels.png"
        (folder / "masks" / f"{image.stem}_vessels.png").write_bytes(mask.read_bytes())
    return folder


@pytest.fixture(scope="module")
def breast_pngs(tmp_path_factory, data_dir) -> Path:
    """BreastMNIST as grey PNG files, ``{train,val,test}/{benign,malignant}/`` (a subset: 48 / 16 / 16 images)."""
    from PIL import Image

    archive = np.load(data_dir / "breastmnist" / "breastmnist.npz")
    folder = tmp_path_factory.mktemp("breast")
    for split, count in (("train", 48), ("val", 16), ("test", 16)):
        images, labels = archive[f"{split}_images"], archive[f"{split}_labels"].reshape(-1)
        for label, name in ((0, "malignant"), (1, "benign")):
            (folder / split / name).mkdir(parents=True)
            for i in np.flatnonzero(labels == label)[: count // 2]:
                Image.fromarray(images[i]).save(folder / split / name / f"{split}_{i:04d}.png")
    return folder


def test_colour_segmentation_trains_and_infers_with_documented_commands(fundus_jpegs, retinal_dir, tmp_path):
    """kdml_seg (trained on BraTS FLAIR) learns vessels from colour JPEG fundus photographs and segments new ones."""
    datalist = tmp_path / "fundus.json"
    out = ok(monai_kd("datalist", str(fundus_jpegs), "--images", "images/*.jpg", "--masks", "masks/{stem}_vessels.png",
                      "--output", str(datalist)))
    assert "12 images of 12 subjects, 12 masks" in out
    root = tmp_path / "run"
    ok(monai_kd("train", "bundles/kdml_seg", "--datalist", str(datalist), "--in_channels", "3",
                "--teacher_epochs", "1", "--max_epochs", "1", "--bundle_root", str(root)))
    assert (root / "models" / "model.pt").is_file()
    ok(monai_bundle("run", "--config_file",
                    "['bundles/kdml_seg/configs/inference.json','bundles/kdml_seg/configs/inference_2d.json']",
                    "--bundle_root", str(root), "--in_channels", "3", "--dataset_dir", str(fundus_jpegs / "images")))
    from PIL import Image

    for image in sorted((fundus_jpegs / "images").glob("*.jpg"))[:3]:
        seg = Image.open(root / "eval" / f"{image.stem}_seg.png")
        assert seg.size == Image.open(image).size  # back at the photograph's own size
        assert set(np.unique(np.asarray(seg)).tolist()) <= {0, 255}
    _colour_exports_run_on_a_photograph(root, fundus_jpegs)
    _colour_dicom_gets_a_seg_through_infer_dicom(root, retinal_dir, tmp_path / "dicom")


def _colour_dicom_gets_a_seg_through_infer_dicom(root: Path, retinal_dir: Path, work: Path) -> None:
    """The README's infer-dicom command on a fundus camera's Ophthalmic Photography image (JPEG, YBR_FULL_422) of a
    photograph the student never saw: a DICOM SEG that validates and holds exactly the mask the documented
    ``monai.bundle run`` 2D inference gives for the same decoded pixels; channel mismatches are refused in one line."""
    import importlib.util

    import pydicom
    from PIL import Image

    def load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    photographs = load("test_emtkd_retinal", REPO / "tests" / "bundles" / "test_emtkd_retinal.py")
    dciodvfy_errors = load("dicom_testdata", REPO / "tests" / "io" / "dicom_testdata.py").dciodvfy_errors
    rgb = np.asarray(Image.open(sorted((retinal_dir / "AV-WIDE" / "images").glob("*.png"))[20]).convert("RGB"))
    for folder in ("in", "png", "grey"):
        (work / folder).mkdir(parents=True)
    photo = photographs._ophthalmic_photograph_jpeg(rgb, work / "in" / "fundus.dcm")
    assert dciodvfy_errors(photo) == []
    ckpt = str(root / "models" / "model.pt")
    command = ("infer-dicom", "--bundle", "bundles/kdml_seg", "--input", str(work / "in"),
               "--output", str(work / "out"), "--ckpt_file", ckpt,
               "--overlay", "bundles/kdml_seg/configs/inference_2d.json", "--in_channels", "3")
    (seg_file,) = ok(monai_kd(*command)).split()
    assert dciodvfy_errors(seg_file) == []
    seg = pydicom.dcmread(seg_file)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["label 1"]  # not the bundle's "whole tumour"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(photo).SeriesInstanceUID
    mask = seg.pixel_array.reshape(rgb.shape[:2]) > 0
    decoded = pydicom.dcmread(photo).pixel_array  # what the camera's JPEG decodes to, as a PNG for monai.bundle run
    Image.fromarray(decoded).save(work / "png" / "fundus.png")
    ok(monai_bundle("run", "--config_file",
                    "['bundles/kdml_seg/configs/inference.json','bundles/kdml_seg/configs/inference_2d.json']",
                    "--bundle_root", str(root), "--in_channels", "3", "--dataset_dir", str(work / "png"),
                    "--output_dir", str(work / "png_out")))
    expected = np.asarray(Image.open(work / "png_out" / "fundus_seg.png")) > 0
    assert 0.001 < expected.mean() < 0.999  # a non-trivial mask, so the comparison can fail
    np.testing.assert_array_equal(mask, expected)
    # without --in_channels the weights say 3 channels (the state dict's first convolution, the ONNX export's input);
    # without --overlay a photograph runs with the bundle's inference_2d.json; --segment_names names the segment
    (named,) = ok(monai_kd(*command[:-4], "--output", str(work / "out2"), "--segment_names", "retinal vessel")).split()
    named = pydicom.dcmread(named)
    assert [s.SegmentLabel for s in named.SegmentSequence] == ["retinal vessel"]
    np.testing.assert_array_equal(named.pixel_array.reshape(rgb.shape[:2]) > 0, mask)
    proc = monai_kd(*command[:-4], "--output", str(work / "out3"), "--segment_names", "['vessel','optic disc']")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "monai-kd: error: BundleError: 2 segment name(s) ['vessel', 'optic disc'] for a network of 2 labels: give 1 "
        "(label 0 is the background).")
    (onnx_seg,) = ok(monai_kd("infer-dicom", "--bundle", "bundles/kdml_seg", "--input", str(work / "in"),
                              "--output", str(work / "out_onnx"), "--ckpt_file", str(root / "models" / "model.onnx"),
                              "--overlay", "bundles/kdml_seg/configs/inference_2d.json")).split()
    assert dciodvfy_errors(onnx_seg) == []
    onnx_mask = pydicom.dcmread(onnx_seg).pixel_array.reshape(rgb.shape[:2]) > 0
    assert (onnx_mask == mask).mean() > 0.999  # ONNX Runtime and torch agree to 1e-4: boundary pixels may flip
    # a wrong --in_channels is one line
    proc = monai_kd(*command[:-1], "1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"monai-kd: error: BundleError: '{ckpt}' was trained with 3 input channel(s) but the config builds 1: "
        "run it with the training's --in_channels 3.")
    # a grey series for the colour model, without the 2D overlay that repeats grey into three channels: refused
    grey = pydicom.dcmread(photographs._secondary_capture_rgb(rgb, work / "grey" / "grey.dcm"))
    grey.PixelData = np.ascontiguousarray(rgb.mean(-1).astype(np.uint8)).tobytes()
    grey.SamplesPerPixel, grey.PhotometricInterpretation = 1, "MONOCHROME2"
    del grey.PlanarConfiguration
    grey.save_as(work / "grey" / "grey.dcm", enforce_file_format=True)
    # (the volume config given as the overlay keeps infer-dicom from picking the 2D one by itself)
    grey_command = ("infer-dicom", "--bundle", "bundles/kdml_seg", "--input", str(work / "grey"), "--output",
                    str(work / "out4"), "--ckpt_file", ckpt)
    proc = monai_kd(*grey_command, "--overlay", "bundles/kdml_seg/configs/inference.json")
    assert proc.returncode == 2 and "1 channel(s) where the model takes 3" in proc.stderr.strip().splitlines()[-1]
    # with the 2D overlay picked by itself grey would become colour, but a grey image without patient geometry cannot
    # be referenced by a DICOM SEG: refused in one line before the model is built
    proc = monai_kd(*grey_command)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "has no patient geometry (ImagePositionPatient/ImageOrientationPatient): a DICOM SEG cannot reference it "
        "validly; convert it to NIfTI to segment it.")
    assert "monai-kd: note: " in proc.stderr and "inference_2d.json" in proc.stderr  # the pick is said


def _colour_exports_run_on_a_photograph(root: Path, fundus_jpegs: Path) -> None:
    """The 3-channel student exports (same override as training) and its exports segment a colour photograph."""
    import torch
    from PIL import Image

    written = ok(monai_kd("export", "bundles/kdml_seg", "--bundle_root", str(root), "--in_channels", "3")).splitlines()[-2:]
    assert written == [str(root / "models" / "model.ts"), str(root / "models" / "model.onnx")]
    import onnxruntime

    extra = {"metadata.json": ""}
    scripted = torch.jit.load(written[0], map_location="cpu", _extra_files=extra)
    session = onnxruntime.InferenceSession(written[1], providers=["CPUExecutionProvider"])
    onnx_meta = session.get_modelmeta().custom_metadata_map["metadata.json"]
    for meta in (json.loads(extra["metadata.json"]), json.loads(onnx_meta)):
        image = meta["network_data_format"]["inputs"]["image"]
        assert image["num_channels"] == 3 and image["channel_def"] == {"0": "red", "1": "green", "2": "blue"}
        assert meta["input_contract"]["channels"] == 3
    photo = sorted((fundus_jpegs / "images").glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(photo).convert("RGB").resize((64, 64)), np.float32).transpose(2, 0, 1)
    x = torch.from_numpy((rgb - rgb.mean()) / rgb.std())[None]  # (1, 3, 64, 64): z-scored as the bundle reads it
    with torch.no_grad():
        expected = scripted(x).numpy()
    assert expected.shape == (1, 2, 64, 64)
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4)
    with pytest.raises(Exception, match="Expected: 3"):  # a grey image is not what it was trained on
        session.run(None, {"image": x.numpy()[:, :1]})
    proc = monai_kd("export", "bundles/kdml_seg", "--bundle_root", str(root), "--output_dir", str(root / "grey"))
    assert proc.returncode != 0
    assert "trained with 3 input channel(s) but the config builds 1: export with the training's --in_channels 3" in \
        proc.stderr


def test_grey_classification_trains_and_infers_with_documented_commands(breast_pngs, tmp_path):
    """kd (trained on PneumoniaMNIST) learns BreastMNIST from PNG folders named by class and classifies new PNGs."""
    datalist = tmp_path / "breast.json"
    for split, role in (("train", "training"), ("val", "validation"), ("test", "test")):
        out = ok(monai_kd("datalist", str(breast_pngs), "--images", f"{split}/*/*.png", "--labels", "folder",
                          "--role", role, "--output", str(datalist)))
        assert "classes 0=benign" in out and "1=malignant" in out
    content = json.loads(datalist.read_text())
    assert [len(content[r]) for r in ("training", "validation", "test")] == [48, 16, 16]
    root = tmp_path / "run"
    ok(monai_kd("train", "bundles/kd", "--datalist", str(datalist), "--teacher_epochs", "1", "--max_epochs", "1",
                "--bundle_root", str(root)))
    ok(monai_bundle("run", "--config_file", "bundles/kd/configs/inference.json", "--bundle_root", str(root),
                    "--dataset_dir", str(breast_pngs / "test"), "--image_pattern", "*/*.png"))
    rows = (root / "eval" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 16
    probabilities = np.array([[float(v) for v in row.split(",")[1:]] for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_mask_of_another_size_is_one_line_naming_both_files(fundus_jpegs, tmp_path):
    """A mask whose size differs from its image's stops training with one line naming the two files."""
    from PIL import Image

    folder = tmp_path / "bad"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image in sorted((fundus_jpegs / "images").glob("*.jpg")):
        (folder / "images" / image.name).write_bytes(image.read_bytes())
        mask = Image.open(fundus_jpegs / "masks" / f"{image.stem}_vessels.png")
        mask.save(folder / "masks" / f"{image.stem}_vessels.png")
    for mask in (folder / "masks").glob("*.png"):  # every mask: whichever split is read first meets one
        Image.open(mask).resize((50, 40)).save(mask)
    datalist = tmp_path / "bad.json"
    ok(monai_kd("datalist", str(folder), "--images", "images/*.jpg", "--masks", "masks/{stem}_vessels.png",
                "--output", str(datalist)))
    proc = monai_kd("train", "bundles/kdml_seg", "--datalist", str(datalist), "--in_channels", "3",
                    "--teacher_epochs", "1", "--max_epochs", "1", "--bundle_root", str(tmp_path / "run"))
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"monai-kd: error: ValueError: Mask (\S+) has size \((\d+), (\d+)\) but its image (\S+) has "
                         r"size \((\d+), (\d+)\): a mask must have its image's size.", line)
    assert match, line
    mask, image = Path(match[1]), Path(match[4])
    assert mask.parent == folder / "masks" and image.parent == folder / "images"
    assert mask.name == f"{image.stem}_vessels.png"
    assert sorted(map(int, match.group(2, 3))) == [40, 50]
    assert tuple(map(int, match.group(5, 6))) in (Image.open(image).size, Image.open(image).size[::-1])


def _breast_datalist(breast_pngs: Path, datalist: Path, roles: dict[str, str]) -> None:
    """The READMEs' ``monai-kd datalist`` commands: one per split folder and role, classes from the folder names."""
    for split, role in roles.items():
        ok(monai_kd("datalist", str(breast_pngs), "--images", f"{split}/*/*.png", "--labels", "folder", "--role", role,
                    "--output", str(datalist)))


def test_kdml_cls_readme_commands(breast_pngs, tmp_path):
    datalist, root = tmp_path / "breast.json", tmp_path / "run"
    _breast_datalist(breast_pngs, datalist, {"train": "training", "val": "validation", "test": "test"})
    ok(monai_kd("train", "bundles/kdml_cls", "--datalist", str(datalist), "--teacher_epochs", "1", "--max_epochs", "1",
                "--bundle_root", str(root)))
    ok(monai_bundle("run", "--config_file", "bundles/kdml_cls/configs/inference.json", "--bundle_root", str(root),
                    "--dataset_dir", str(breast_pngs / "test"), "--image_pattern", "*/*.png"))
    assert len((root / "eval" / "predictions.csv").read_text().strip().splitlines()) == 16


def test_emtkd_readme_commands(breast_pngs, tmp_path):
    datalist, root = tmp_path / "domains.json", tmp_path / "run"
    _breast_datalist(breast_pngs, datalist, {"train": "source", "val": "target_labelled"})
    ok(monai_kd("datalist", str(breast_pngs), "--images", "test/*/*.png", "--role", "target_unlabelled",
                "--output", str(datalist)))
    content = json.loads(datalist.read_text())
    assert "label" not in content["target_unlabelled"][0] and isinstance(content["source"][0]["label"], int)
    ok(monai_bundle("run", "--config_file", "bundles/emtkd/configs/train_classification.json", "--bundle_root", str(root),
                    "--datalist", str(datalist), "--teacher_epochs", "1", "--max_epochs", "1", "--epoch_length", "2"))
    assert {p.name for p in (root / "models").glob("*.pt")} >= {"teacher_a.pt", "teacher_b.pt", "model.pt"}


@pytest.fixture(scope="module")
def brats_nifti_slices(tmp_path_factory, data_dir) -> Path:
    """Every third axial BraTS FLAIR slice as a 2D NIfTI file, ``slices/{no_tumour,tumour}/<patient>_z<k>.nii.gz``."""
    import nibabel as nib

    from monai_kd.data import brats_slice_datalist

    folder = tmp_path_factory.mktemp("slices")
    for name in ("no_tumour", "tumour"):
        (folder / name).mkdir()
    for split in ("train", "val", "test"):
        for item in brats_slice_datalist(data_dir / "brats2015-sample", split, "flair")[::3]:
            name = ("no_tumour", "tumour")[int(item["label"])]
            path = folder / name / f"{item['subject']}_z{int(item['slice']):03d}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(item["image"][0], np.float32), np.eye(4)), path)
    return folder


def test_mmkd_readme_commands(brats_nifti_slices, tmp_path):
    datalist, root = tmp_path / "slices.json", tmp_path / "run"
    out = ok(monai_kd("datalist", str(brats_nifti_slices), "--images", "*/*.nii.gz", "--labels", "folder",
                      "--subject", "/(.+)_z[0-9]+", "--output", str(datalist)))
    assert "of 6 subjects" in out and "0=no_tumour" in out  # the six BraTS patients
    ok(monai_kd("train", "bundles/mmkd", "--datalist", str(datalist), "--teacher_epochs", "1", "--max_epochs", "1",
                "--bundle_root", str(root)))
    assert (root / "models" / "model.pt").is_file()


@pytest.fixture(scope="module")
def device_photographs(tmp_path_factory, retinal_dir) -> Path:
    """The 66 retinal photographs in one folder per device (links to the shared files)."""
    folder = tmp_path_factory.mktemp("devices")
    for device, pattern in (("STARE", "STARE/stare-images/*.ppm"), ("VEVIO", "VEVIO/frames/*.png"),
                            ("AV-WIDE", "AV-WIDE/images/*.png")):
        (folder / device).mkdir()
        for image in sorted(retinal_dir.glob(pattern)):
            (folder / device / image.name).symlink_to(image)
    return folder


def test_weckd_readme_commands(device_photographs, tmp_path):
    datalist, root = tmp_path / "devices.json", tmp_path / "run"
    out = ok(monai_kd("datalist", str(device_photographs), "--images", "*/*", "--labels", "folder", "--subject",
                      "(neo[0-9]+|im[0-9]+|wide_image_[0-9]+)", "--output", str(datalist)))
    assert "66 images" in out and "0=AV-WIDE (30), 1=STARE (20), 2=VEVIO (16)" in out
    ok(monai_kd("train", "bundles/weckd", "--datalist", str(datalist), "--in_channels", "3", "--num_classes", "3",
                "--max_epochs", "1", "--min_iterations", "1", "--bundle_root", str(root)))
    ok(monai_bundle("run", "--config_file", "bundles/weckd/configs/inference.json", "--bundle_root", str(root),
                    "--in_channels", "3", "--num_classes", "3", "--dataset_dir", str(device_photographs),
                    "--image_pattern", "*/*"))
    rows = (root / "eval" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 66 and all(len(row.split(",")) == 4 for row in rows)  # file, 3 class probabilities
