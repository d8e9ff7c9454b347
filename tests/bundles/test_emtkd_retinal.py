"""The EMTKD bundle's default benchmark: retinal vessel segmentation across devices, in-process on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run
from PIL import Image

from conftest import REPO

BUNDLE = REPO / "bundles" / "emtkd"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")
META = str(CONFIGS / "metadata.json")
TINY = {"teacher_epochs": 1, "max_epochs": 1, "epoch_length": 2, "val_interval": 1, "log_interval": 1}


def _parser(root: Path, retinal: Path, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser["bundle_root"] = str(root)
    parser["dataset_dir"] = str(retinal)
    for key, value in override.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("split_seed", [None, 1])
def test_default_benchmark_teachers_see_sources_and_no_held_out_person(tmp_path, retinal_dir, split_seed):
    parser = _parser(tmp_path, retinal_dir, split_seed=split_seed)
    people = lambda key: {i["subject"] for i in parser.get_parsed_content(key)}  # noqa: E731
    held_out = people("val_datalist") | people("test_datalist")
    assert len(held_out) == 14
    assert {i["domain"] for i in parser.get_parsed_content("teacher_a#datalist")} == {"STARE", "VEVIO"}
    for key in ("teacher_a#datalist", "teacher_b#datalist", "target_datalist", "target_labelled_datalist",
                "target_unlabelled_datalist"):
        assert not people(key) & held_out, key
    assert len(people("target_labelled_datalist")) == 4 and len(people("target_unlabelled_datalist")) == 12
    assert all(int(i["label"]) == -1 for i in parser.get_parsed_content("target_unlabelled_datalist"))
    # the test split is evaluated at the labels' own resolution, the training lists are zoomed by `scale`
    test = parser.get_parsed_content("test_datalist")[0]
    assert test["image"].shape[1:] == test["label"].shape[1:] and test["image"].shape[1] > 1000
    sizes = {key: sum(p.numel() for p in parser.get_parsed_content(key).parameters())
             for key in ("teacher_a#network_def", "teacher_b#network_def", "network_def")}
    assert min(sizes["teacher_a#network_def"], sizes["teacher_b#network_def"]) >= 5 * sizes["network_def"]


def test_fixmatch_views_share_geometry_and_differ_only_photometrically(tmp_path, retinal_dir):
    """Weak and strong views of an unlabelled patch are the same crop, flip and rotation of the image."""
    parser = _parser(tmp_path, retinal_dir)
    transform = parser.get_parsed_content("unlabelled_transforms")
    transform.set_random_state(0)
    yy, xx = np.meshgrid(np.arange(200.0), np.arange(150.0), indexing="ij")
    image = (np.sin(xx / 7.0) + np.cos(yy / 11.0) + xx / 150.0)[None].astype(np.float32)  # no symmetry
    correlations = []
    for _ in range(10):
        for view in transform({"image": image}):
            weak, strong = (np.asarray(view[k]).ravel() for k in ("image_weak", "image_strong"))
            kept = strong != 0  # outside the cut-out hole
            correlations.append(np.corrcoef(weak[kept], strong[kept])[0, 1])
    assert min(correlations) > 0.7  # a flip or crop of one view only would decorrelate them
    assert max(correlations) < 1.0  # and the strong view is really perturbed


def test_bundle_trains_evaluates_and_infers_on_real_retinal_images(tmp_path, retinal_dir):
    run("run", config_file=TRAIN, meta_file=META, bundle_root=str(tmp_path), dataset_dir=str(retinal_dir), **TINY)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["model.pt", "student_alone.pt", "teacher_a.pt", "teacher_b.pt", "teacher_weighting.pt"]

    run("run", config_file=[TRAIN, str(CONFIGS / "evaluate.json")], meta_file=META, bundle_root=str(tmp_path),
        dataset_dir=str(retinal_dir))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher_a", "teacher_b", "student_alone", "student_emtkd"}
    for m in metrics.values():
        assert 0 <= m["dice"] <= 1 and 0 <= m["auc"] <= 1 and len(m["dice_per_image"]) == 10
    # the model card: mean per-image Dice of the 10 AV-WIDE test people, interval resampled by person
    card = json.loads((tmp_path / "eval" / "model_card.json").read_text())
    assert {n: m["role"] for n, m in card["models"].items()} == {
        "student_emtkd": "student", "teacher_a": "teacher", "teacher_b": "teacher", "student_alone": "baseline"}
    test = card["models"]["student_emtkd"]["test"]
    assert test["subjects"] == 10 and test["dice"]["value"] == pytest.approx(metrics["student_emtkd"]["dice"])
    assert test["dice"]["ci95"][0] <= test["dice"]["value"] <= test["dice"]["ci95"][1]
    assert card["training_data"]["splits"]["student labelled (AV-WIDE)"] == {"images": 4, "subjects": 4}
    assert "research" in card["licence"]["training_data"] and card["input_contract"]["channels"] == 3

    images = tmp_path / "photos"
    images.mkdir()
    source = retinal_dir / "AV-WIDE" / "images" / "wide_image_02.png"
    Image.open(source).save(images / "wide_image_02.png")
    run("run", config_file=str(CONFIGS / "inference.json"), meta_file=META, bundle_root=str(tmp_path),
        dataset_dir=str(images))
    mask = Image.open(tmp_path / "eval" / "wide_image_02_vessels.png")
    assert mask.size == Image.open(source).size and set(np.unique(np.asarray(mask))) <= {0, 255}

    # scripts/emtkd_evidence.py scores one checkpoint through evaluate.json (run_checkpoint): the bundle's numbers
    import shutil

    from conftest import load_script

    ckpt = tmp_path / "evidence" / "models" / "teacher_a.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "models" / "teacher_a.pt", ckpt)
    ev = load_script("emtkd_evidence")
    got = ev.RetinalEvidence(tmp_path / "work", tmp_path / "results.json", {}).evaluate(
        "retinal", 0, "teacher_a#network_def", ckpt)
    assert list(got) == ["dice", "auc", "val_dice", "val_auc", "parameters"]
    assert got["dice"] == pytest.approx(metrics["teacher_a"]["dice"], abs=1e-6)
    assert got["auc"] == pytest.approx(metrics["teacher_a"]["auc"], abs=1e-6)
    assert got["parameters"] == metrics["teacher_a"]["parameters"] and 0 <= got["val_dice"] <= 1


def test_inference_mask_is_the_networks_prediction(tmp_path, retinal_dir):
    """The written mask equals argmax of the network on the zoomed, normalised green channel, brought back."""
    from monai.inferers import SlidingWindowInferer

    from monai_kd.metrics.segmentation import segment_probability

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    images = tmp_path / "photos"
    images.mkdir()
    rgb = np.asarray(Image.open(retinal_dir / "VEVIO" / "frames" / "neo02od1_d.png"))
    Image.fromarray(rgb).save(images / "neo02.png")
    run("run", config_file=str(CONFIGS / "inference.json"), meta_file=META, bundle_root=str(tmp_path),
        dataset_dir=str(images))
    mask = np.asarray(Image.open(tmp_path / "eval" / "neo02_vessels.png")) > 0
    train = _parser(tmp_path, retinal_dir)
    green = rgb[..., 1].T[None].astype(np.float32)  # MONAI's PIL reader gives (W, H)
    prob = segment_probability(net, green, train.get_parsed_content("inference_transforms"),
                               SlidingWindowInferer((128, 128), sw_batch_size=8, overlap=0.25))
    prob = prob.numpy().T
    decided = np.abs(prob - 0.5) > 0.1  # away from the decision boundary (upsampling: Invertd vs bilinear)
    assert decided.mean() > 0.2
    assert (mask == (prob >= 0.5))[decided].mean() > 0.99


def test_evidence_report_of_retinal_records_is_paired_and_apart_from_classification():
    from conftest import load_script

    ev = load_script("emtkd_evidence")
    rec = lambda method, seed, dice: {  # noqa: E731
        "benchmark": "retinal", "method": method, "seed": seed, "dice": dice, "auc": 0.9, "val_dice": 0.5,
        "val_auc": 0.9, "parameters": 51777,
    }
    runs = [rec("emtkd", 0, 0.60), rec("emtkd", 1, 0.70), rec("uniform_mtkd", 0, 0.55), rec("uniform_mtkd", 1, 0.65),
            rec("student_all_target_labels", 0, 0.8)]
    text = ev.markdown_retinal({"runs": runs, "selection": {}})
    assert "| emtkd | 2 | 51,777 | 0.650 ± 0.071 | 0.900 ± 0.000 | 0.500 ± 0.000 |" in text
    assert "| student_all_target_labels | 1 |" in text
    assert ("test-dice gain of emtkd over uniform_mtkd: 0.050 ± 0.000, 95% CI [0.050, 0.050]"
            " (emtkd higher on 2/2 seeds)") in text  # equal gains on both seeds: a zero-width interval
    assert "retinal" not in ev.markdown({"runs": runs, "selection": {}}, None)  # classification tables ignore it
    assert ev.RETINAL_METHODS[-1] == "student_all_target_labels" and set(ev.METHODS) < set(ev.RETINAL_METHODS)


class _HalfConfident(torch.nn.Module):
    """A fixed 'teacher': vessel with logit margin 10 on the left half of the image, undecided on the right half."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
        logits[:, 1, :, : x.shape[-1] // 2] = 10.0
        return logits


@pytest.mark.parametrize("weighting", ["uniform", "camkd", "gate"])
def test_dense_semi_supervised_step_keeps_exactly_the_confident_pixels(weighting):
    """Pixel-wise FixMatch from fused dense teachers: confident on half the pixels -> half the pseudo-labels kept."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    from monai_kd.engines import SemiSupervisedDistillationTrainer
    from monai_kd.losses import DistillationLoss, FixMatchLoss, MultiTeacherKDLoss
    from monai_kd.networks import ConfidenceWeighting, LearnedGateWeighting, UniformWeighting

    torch.manual_seed(0)
    student = UNet(2, 1, 2, (4, 8), (2,), num_res_units=0)
    module = {"uniform": UniformWeighting(), "camkd": ConfidenceWeighting(form="camkd"),
              "gate": LearnedGateWeighting(2, 2)}[weighting]
    loss = DistillationLoss(DiceCELoss(to_onehot_y=True, softmax=True), MultiTeacherKDLoss(2.0, module))
    label = torch.zeros(2, 1, 16, 16)
    label[..., :8] = 1
    trainer = SemiSupervisedDistillationTrainer(
        device="cpu", max_epochs=1, epoch_length=1, network=student,
        optimizer=torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.01),
        loss_function=loss, teachers=[_HalfConfident(), _HalfConfident()],
        train_data_loader=[{"image": torch.randn(2, 1, 16, 16), "label": label}],
        unlabeled_data_loader=[{"image_weak": torch.randn(3, 1, 16, 16), "image_strong": torch.randn(3, 1, 16, 16)}],
        fixmatch_loss=FixMatchLoss(0.95),
    )
    trainer.run()
    out = trainer.state.output[0]  # decollated: the first labelled row
    assert out["pseudo_label_rate"] == pytest.approx(0.5)  # softmax(10) = 0.99995 >= 0.95, softmax(0) = 0.5 < 0.95
    assert out["teacher_weights"].shape == (2,) and float(out["teacher_weights"].sum()) == pytest.approx(1.0)
    assert out["loss_fixmatch"] > 0


def _secondary_capture_rgb(rgb: np.ndarray, path: Path) -> Path:
    """A fundus photograph as an RGB Secondary Capture image, the way a fundus camera's export reaches a PACS."""
    import datetime

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Fundus", "F001", "", "O"
    ds.StudyDate = ds.ContentDate = datetime.date.today().strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.SeriesNumber, ds.InstanceNumber, ds.Modality, ds.ConversionType = 1, 1, "OP", "DI"
    ds.PatientOrientation, ds.ImageLaterality = "", "R"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image Storage


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _ophthalmic_photograph_jpeg(rgb: np.ndarray, path: Path) -> Path:
    """A fundus photograph as a fundus camera sends it: Ophthalmic Photography 8 Bit Image, JPEG baseline (Pillow's
    encoder), YBR_FULL_422 (4:2:2 chroma subsampling), one frame of a multi-frame IOD, no patient geometry."""
    import datetime
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    jpeg = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(jpeg, format="JPEG", quality=95, subsampling="4:2:2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = OP_8BIT, generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Fundus", "F002", "", "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AcquisitionDateTime = today + "120000"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OP", 1, 1
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber, ds.SoftwareVersions = "test", "test", "0", "0"
    ds.ImageType, ds.ImageLaterality, ds.PatientOrientation, ds.BurnedInAnnotation = ["ORIGINAL", "PRIMARY"], "R", "", "NO"
    ds.AnatomicRegionSequence = Sequence([_code("81745001", "SCT", "Eye")])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames, ds.FrameIncrementPointer, ds.FrameTime = 1, 0x00181063, 0  # Multi-frame module (M)
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.LossyImageCompressionRatio = f"{rgb.size / len(jpeg.getvalue()):.2f}"
    ds.SynchronizationFrameOfReferenceUID, ds.SynchronizationTrigger = generate_uid(), "NO TRIGGER"
    ds.AcquisitionTimeSynchronized, ds.PatientEyeMovementCommanded, ds.DetectorType = "N", "NO", "CCD"
    ds.AcquisitionContextSequence = ds.RefractiveStateSequence = Sequence()
    ds.EmmetropicMagnification = ds.IntraOcularPressure = ds.HorizontalFieldOfView = ds.PupilDilated = None
    ds.AcquisitionDeviceTypeCodeSequence = Sequence([_code("409898007", "SCT", "Fundus Camera")])
    ds.IlluminationTypeCodeSequence = ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.ImagePathFilterTypeStackCodeSequence = ds.LensesCodeSequence = Sequence()
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("make_photo, sop_class", [(_secondary_capture_rgb, "1.2.840.10008.5.1.4.1.1.7"),
                                                   (_ophthalmic_photograph_jpeg, OP_8BIT)])
def test_infer_dicom_segments_a_colour_fundus_photograph_into_a_valid_seg(tmp_path, retinal_dir, make_photo, sop_class):
    """An RGB Secondary Capture and a JPEG-baseline YBR_FULL_422 Ophthalmic Photography image (what a fundus camera
    sends to a PACS) each get a valid SEG on the photograph holding the student's mask."""
    import highdicom as hd
    import pydicom
    from monai.inferers import SlidingWindowInferer

    from monai_kd import cli
    from monai_kd.metrics.segmentation import segment_probability
    dciodvfy_errors = _dciodvfy()

    rgb = np.asarray(Image.open(retinal_dir / "VEVIO" / "frames" / "neo02od1_d.png").convert("RGB"))
    (tmp_path / "in").mkdir()
    photo = make_photo(rgb, tmp_path / "in" / "fundus.dcm")
    assert dciodvfy_errors(photo) == []
    decoded = pydicom.dcmread(photo).pixel_array  # RGB (JPEG: lossy, YBR converted to RGB by pydicom)
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(float) - rgb).mean() < 2
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "student.pt")
    cli.infer_dicom(str(BUNDLE), str(photo), str(tmp_path / "out"), ckpt_file=str(tmp_path / "student.pt"))
    (seg_file,) = (tmp_path / "out").glob("*.seg.dcm")
    assert dciodvfy_errors(seg_file) == []
    seg = hd.seg.segread(seg_file)
    assert seg.get_segment_description(1).segment_label == "retinal vessel"
    (source,) = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert source.ReferencedSOPClassUID == sop_class and source.ReferencedSOPInstanceUID == pydicom.dcmread(photo).SOPInstanceUID
    mask = np.asarray(seg.pixel_array).reshape(rgb.shape[:2]) > 0  # one frame, rows x columns
    prob = segment_probability(net, decoded[..., 1].T[None].astype(np.float32),
                               _parser(tmp_path, retinal_dir).get_parsed_content("inference_transforms"),
                               SlidingWindowInferer((128, 128), sw_batch_size=8, overlap=0.25)).numpy().T
    decided = np.abs(prob - 0.5) > 0.1
    assert decided.mean() > 0.2 and (mask == (prob >= 0.5))[decided].mean() > 0.99  # the student's mask, on the photo


def _dciodvfy():
    """The IOD validator helper of the DICOM tests (tests/io/dicom_testdata.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dicom_testdata", REPO / "tests" / "io" / "dicom_testdata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dciodvfy_errors
