"""Exported metadata and model cards follow the configuration actually run: channels, input size and class names."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from monai_kd.bundle_utils import config_network_input, configured_metadata


def _meta(bundle: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())


def test_colour_segmentation_metadata_declares_three_channels_and_its_size():
    meta = _meta("kdml_seg")
    colour = configured_metadata(meta, in_channels=3, spatial_size=[256, 256])
    image, pred = colour["network_data_format"]["inputs"]["image"], colour["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 3 and image["channel_def"] == {"0": "red", "1": "green", "2": "blue"}
    assert colour["input_contract"]["channels"] == 3
    # a colour model was trained on other data than BraTS FLAIR: the bundle's modality, body part, spacing and
    # segment name do not describe it
    assert {"modality", "body_part", "pixel_spacing_mm"}.isdisjoint(colour["input_contract"])
    assert colour["input_contract"]["dimensionality"] == [2, 3]
    assert image["spatial_shape"] == [256, 256] and pred["spatial_shape"] == [256, 256]
    assert pred["num_channels"] == 2 and pred["channel_def"] == {"0": "background", "1": "label 1"}
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1  # the bundle's metadata is not modified
    assert configured_metadata(meta, 1, [64, 64]) == meta  # the configured default: the metadata as it is
    assert configured_metadata(meta, 2)["network_data_format"]["inputs"]["image"]["channel_def"] == {
        "0": "channel 0", "1": "channel 1"}
    assert configured_metadata(meta, spatial_size=[8, 8, 8]) == meta  # another rank: as declared


def test_classifier_metadata_takes_the_class_names_of_the_data_used():
    meta = _meta("kd")
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "pneumonia"}
    breast = configured_metadata(meta, class_names=["malignant", "normal, benign"])
    assert breast["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "malignant", "1": "normal, benign"}
    three = configured_metadata(meta, class_names=["a", "b", "c"])["network_data_format"]["outputs"]["pred"]
    assert three["num_channels"] == 3 and three["spatial_shape"] == [3]


def test_segment_names_name_the_labels_of_a_model_of_the_users_data():
    meta = _meta("kdml_seg")
    colour = configured_metadata(meta, in_channels=3, segment_names=["retinal vessel"])
    assert colour["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "retinal vessel"}
    same = configured_metadata(meta, segment_names=["tumour"])  # the bundle's own channel count: renamed too
    assert same["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "tumour"}
    assert same["input_contract"] == meta["input_contract"]  # naming a segment changes nothing else
    with pytest.raises(ValueError, match=r"2 segment name\(s\) \['a', 'b'\] for a network of 2 labels: give 1"):
        configured_metadata(meta, segment_names=["a", "b"])
    with pytest.raises(ValueError, match="classifier"):
        configured_metadata(_meta("kd"), segment_names=["a"])


@pytest.mark.parametrize(("bundle", "override", "expected"), [
    ("kdml_seg", {}, {"in_channels": 1, "spatial_size": [64, 64]}),
    ("kdml_seg", {"in_channels": 3, "spatial_size": [256, 256]}, {"in_channels": 3, "spatial_size": [256, 256]}),
    ("kd", {"in_channels": 3}, {"in_channels": 3, "spatial_size": [28, 28]}),  # ResNet's n_input_channels
])
def test_config_network_input_reads_the_overridden_config(bundle, override, expected):
    config = str(REPO / "bundles" / bundle / "configs" / "inference.json")
    assert config_network_input([config], override) == expected


def test_export_refuses_weights_of_another_channel_count(tmp_path):
    import torch
    from monai.networks.nets import UNet

    from monai_kd import cli
    from monai_kd.bundle_utils import BundleError

    net = UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(8, 16, 32, 64), strides=(2, 2, 2),
               num_res_units=1)
    torch.save(net.state_dict(), tmp_path / "colour.pt")
    with pytest.raises(BundleError, match=r"trained with 3 input channel\(s\) but the config builds 1: export with "
                                          r"the training's --in_channels 3"):
        cli.export(str(REPO / "bundles" / "kdml_seg"), ckpt_file=str(tmp_path / "colour.pt"), output_dir=str(tmp_path))
    assert not (tmp_path / "model.ts").exists()


def test_model_card_of_a_breastmnist_run_names_breastmnist_classes(data_dir):
    """kd run on BreastMNIST by ``--dataset_dir``: the card's classes come from the data, not PneumoniaMNIST's."""
    from monai.bundle import ConfigParser

    configs = [str(REPO / "bundles" / "kd" / "configs" / f) for f in ("train.json", "evaluate.json")]
    names = {}
    for data in ("breastmnist", "pneumoniamnist"):
        parser = ConfigParser()
        parser.read_config(configs)
        parser.update({"dataset_dir": str(data_dir / data), "bundle_root": str(REPO / "bundles" / "kd")})
        names[data] = list(parser.get_parsed_content("model_card#class_names"))
        assert parser.get_parsed_content("model_card#in_channels") == 1
    assert names == {"breastmnist": ["malignant", "normal, benign"], "pneumoniamnist": ["normal", "pneumonia"]}
