"""Input the model was not trained for is refused in one line unless forced; a forced run says so in its outputs;
a model file that does not match its model card is refused, and the outputs name the card's version."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dicom_testdata import KD_BUNDLE, dciodvfy_errors, files_below, pydicom_file

from conftest import REPO
from monai_kd.dicom_inference import infer_dicom
from monai_kd.input_contract import InputContract, InputContractError, check_input

pytest_plugins = ["dicom_testdata"]
BUNDLES = ("kd", "emtkd", "kdml_cls", "kdml_seg", "mmkd", "weckd")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_declares_what_its_student_accepts(bundle):
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    contract = InputContract.from_metadata(meta)
    assert contract is not None and contract.modality and contract.dimensionality and contract.channels
    assert contract.describe()


def test_violations_are_named_one_by_one():
    contract = InputContract.from_metadata({"input_contract": {
        "modality": ["DX", "CR"], "body_part": ["CHEST"], "dimensionality": [2], "channels": 1,
        "pixel_spacing_mm": [0.5, 2.0]}})
    assert contract.violations("CR", "CHEST", 2, 1, [1.0, 1.0]) == []
    assert contract.violations("CR", "", 2, 1, None) == []  # a series that states no body part passes that check
    assert contract.violations("CT", "ABDOMEN", 3, 3, [0.4, 1.0]) == [
        "modality CT is not DX/CR",
        "body part ABDOMEN is not CHEST",
        "a 3D input where the model takes 2D",
        "3 channel(s) where the model takes 1",
        "pixel spacing [0.4, 1.0] mm outside 0.5-2 mm",
    ]
    with pytest.raises(ValueError, match="unknown key.*'modalities'"):
        InputContract.from_metadata({"input_contract": {"modalities": ["CT"]}})
    with pytest.raises(ValueError, match="dimensionality"):
        InputContract.from_metadata({"input_contract": {"dimensionality": [4]}})
    assert InputContract.from_metadata({}) is None  # no declaration: not guarded
    assert check_input({}, input=str(REPO.parent / "shared" / "data" / "totalsegmentator-examples" / "example_ct_sm.nii.gz"))[
        "declared"] is False


def test_chest_xray_classifier_refuses_the_abdominal_ct_series(ct_dir, kd_checkpoint, tmp_path):
    before = {p: p.read_bytes() for p in files_below(ct_dir)}
    with pytest.raises(InputContractError) as error:
        infer_dicom(str(KD_BUNDLE), str(ct_dir), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint))
    message = str(error.value)
    assert "\n" not in message and "modality CT is not DX/CR" in message and "a 3D input where the model takes 2D" in message
    assert "--force" in message
    assert not (tmp_path / "out").exists()
    assert {p: p.read_bytes() for p in files_below(ct_dir)} == before


def test_forced_run_records_the_override_in_the_sr_and_json(ct_dir, ct_series, kd_checkpoint, tmp_path):
    written = infer_dicom(str(KD_BUNDLE), str(ct_dir), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint), force=True)
    summary = json.loads(Path(written[1]).read_text())
    record = summary["input_contract"]
    assert record["forced"] is True and "modality CT is not DX/CR" in record["violations"]
    assert record["input"]["modality"] == "CT" and record["input"]["dimensionality"] == 3
    sr = pydicom.dcmread(written[0])
    assert "FORCED" in sr.SeriesDescription
    assert dciodvfy_errors(written[0]) == []


def test_nifti_is_checked_for_dimensionality_only(data_dir, kd_checkpoint, tmp_path):
    nifti = data_dir / "totalsegmentator-examples" / "example_ct_sm.nii.gz"
    with pytest.raises(InputContractError, match="a 3D input where the model takes 2D"):
        infer_dicom(str(KD_BUNDLE), str(nifti), str(tmp_path / "out"), ckpt_file=str(kd_checkpoint))


def test_cli_refuses_in_one_line_and_force_runs(ct_dir, kd_checkpoint, tmp_path):
    base = [sys.executable, "-m", "monai_kd.cli", "infer-dicom", "--bundle", str(KD_BUNDLE), "--input",
            pydicom_file("CT_small.dcm"), "--ckpt_file", str(kd_checkpoint)]
    refused = subprocess.run(base + ["--output", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monai-kd: error: InputContractError:") and "CT_small.dcm" in lines[0]
    forced = subprocess.run(base + ["--output", str(tmp_path / "b"), "--force"], capture_output=True, text=True,
                            timeout=300)
    assert forced.returncode == 0, forced.stderr
    (json_file,) = (tmp_path / "b").glob("*.classification.json")
    assert json.loads(json_file.read_text())["input_contract"]["forced"] is True


def _bundle_with_card(tmp_path, kd_checkpoint) -> Path:
    """A bundle folder whose model card records its model.pt (as an evaluation + export leave it)."""
    root = tmp_path / "kd"
    shutil.copytree(KD_BUNDLE / "configs", root / "configs")
    (root / "models").mkdir()
    shutil.copy(kd_checkpoint, root / "models" / "model.pt")
    digest = hashlib.sha256((root / "models" / "model.pt").read_bytes()).hexdigest()
    (root / "eval").mkdir()
    card = {"bundle": "kd", "version": "0.1.0", "card_version": "0.1.0+card.0123456789",
            "exports": [{"file": "models/model.pt", "sha256": digest, "bytes": 1}]}
    (root / "eval" / "model_card.json").write_text(json.dumps(card))
    return root


def test_outputs_name_the_model_card_and_a_tampered_model_is_refused(kd_checkpoint, tmp_path):
    root = _bundle_with_card(tmp_path, kd_checkpoint)
    xray = pydicom_file("CT_small.dcm")
    written = infer_dicom(str(root), xray, str(tmp_path / "out"), force=True)
    summary = json.loads(Path(written[1]).read_text())
    assert summary["model_card"]["card_version"] == "0.1.0+card.0123456789"
    sr = pydicom.dcmread(written[0])
    texts = {str(e.value) for e in sr.iterall() if e.keyword == "TextValue"}
    assert "0.1.0+card.0123456789" in texts  # the algorithm version of every measurement
    with open(root / "models" / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="does not match its model card"):
        infer_dicom(str(root), xray, str(tmp_path / "out2"), force=True)
    assert not (tmp_path / "out2").exists()


def test_node_quarantines_a_series_outside_the_contract(kd_checkpoint, tmp_path):
    pytest.importorskip("pynetdicom")
    from node_testdata import wait_for

    from monai_kd.node import load_routes, parse_address, store_files
    from monai_kd.node.server import DicomNode

    routes = load_routes([{"name": "chest", "bundle": str(KD_BUNDLE), "ckpt_file": str(kd_checkpoint), "modality": "CT"}])
    node = DicomNode(tmp_path / "work", routes, port=0, quiet_time=0.5, output_dir=tmp_path / "out", fsync=False,
                     min_free_mb=50)
    node.start()
    try:
        address = parse_address(f"MONAIKD@127.0.0.1:{node.port}")
        assert set(store_files([Path(pydicom_file("CT_small.dcm"))], address)) == {0}
        wait_for(lambda: list(node.queue.quarantine_records()), 60, "the CT image to be quarantined")
    finally:
        node.stop()
    (record,) = node.queue.quarantine_records()
    assert "InputContractError" in record["reason"] and "modality CT is not DX/CR" in record["reason"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_forced_segmentation_records_the_override_in_the_seg(ct_dir, tmp_path):
    from dicom_testdata import segmentation_bundle

    bundle = segmentation_bundle(tmp_path / "bundle")
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["input_contract"] = {"modality": ["MR"], "dimensionality": [3], "channels": 1}
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputContractError, match="modality CT is not MR"):
        infer_dicom(str(bundle), str(ct_dir), str(tmp_path / "refused"))
    (seg_file,) = infer_dicom(str(bundle), str(ct_dir), str(tmp_path / "out"), force=True)
    seg = pydicom.dcmread(seg_file)
    assert "FORCED" in seg.SeriesDescription and "FORCED" in seg.ContentDescription
    assert "modality CT is not MR" in seg.ImageComments
    assert dciodvfy_errors(seg_file) == []


def test_an_unreadable_nifti_is_left_to_the_reader(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    record = check_input({"input_contract": {"dimensionality": [2], "channels": 1}}, input=broken)
    assert record["violations"] == [] and record["input"]["dimensionality"] is None


def _first_conv_weights(path: Path, channels: int) -> str:
    """A state dict whose first convolution takes ``channels`` channels: what the channel count is read from."""
    import torch

    torch.save({"model.0.conv.unit0.conv.weight": torch.zeros(8, channels, 3, 3)}, path)
    return str(path)


def test_the_contract_follows_the_channel_count_the_weights_were_trained_with(tmp_path):
    """kdml_seg's student trained with --in_channels 3 (on other data than BraTS FLAIR) takes colour images of any
    modality; its own one-channel student keeps the bundle's contract; a wrong --in_channels is one line; the 2D
    overlay, whose AsImaged averages colour into grey and repeats grey into colour, takes either."""
    from monai_kd.bundle_utils import BundleError
    from monai_kd.dicom_inference import model_metadata

    bundle = str(REPO / "bundles" / "kdml_seg")
    overlay = str(REPO / "bundles" / "kdml_seg" / "configs" / "inference_2d.json")
    grey, colour = _first_conv_weights(tmp_path / "grey.pt", 1), _first_conv_weights(tmp_path / "colour.pt", 3)
    meta, override, _ = model_metadata(bundle, grey)
    assert meta["input_contract"]["channels"] == 1 and meta["input_contract"]["modality"] == ["MR"]
    assert override == {"in_channels": 1}
    meta, override, _ = model_metadata(bundle, colour)
    assert override == {"in_channels": 3} and meta["input_contract"]["channels"] == 3
    assert "modality" not in meta["input_contract"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "label 1"}
    assert model_metadata(bundle, colour, override={"in_channels": 3})[0] == meta
    with pytest.raises(BundleError, match=r"trained with 3 input channel\(s\) but the config builds 1: run it with "
                                          r"the training's --in_channels 3\.$"):
        model_metadata(bundle, colour, override={"in_channels": 1})
    for weights in (grey, colour):
        assert model_metadata(bundle, weights, overlay)[0]["input_contract"]["channels"] is None
    contract = InputContract.from_metadata(model_metadata(bundle, grey)[0])
    assert contract.violations(None, None, 2, 3, None) == ["3 channel(s) where the model takes 1"]
    contract = InputContract.from_metadata(model_metadata(bundle, colour)[0])
    assert contract.violations("OP", "EYE", 2, 1, None) == ["1 channel(s) where the model takes 3"]
    assert contract.violations("OP", "EYE", 2, 3, [0.01, 0.01]) == []
