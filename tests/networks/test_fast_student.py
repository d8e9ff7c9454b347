"""FastStudent: shapes, parameters and multiply-accumulates against a hand count; every bundle overlay builds it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO, load_script

from monai_kd.networks import FastStudent

# hand count for a 1x28x28 image, defaults (stem 16 ch stride 2; stages 16/32/64/128, strides 1/2/2/2):
# conv MACs = C_out * C_in/groups * k*k * H_out*W_out; the linear layer 128 * 2
HAND_MACS = {
    "stem": 16 * 1 * 9 * 14 * 14,
    "layer1": 16 * 9 * 14 * 14 + 16 * 16 * 14 * 14,
    "layer2": 16 * 9 * 7 * 7 + 16 * 32 * 7 * 7,
    "layer3": 32 * 9 * 4 * 4 + 32 * 64 * 4 * 4,
    "layer4": 64 * 9 * 2 * 2 + 64 * 128 * 2 * 2,
    "fc": 128 * 2,
}
# weights + BatchNorm (weight, bias) per conv; no conv bias
HAND_PARAMS = (16 * 9 + 32) + (16 * 9 + 32 + 16 * 16 + 32) + (16 * 9 + 32 + 16 * 32 + 64) \
    + (32 * 9 + 64 + 32 * 64 + 128) + (64 * 9 + 128 + 64 * 128 + 256) + (128 * 2 + 2)


def test_shapes_parameters_and_macs_match_a_hand_count():
    net = FastStudent().eval()
    shapes = {}
    for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    out = net(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 2)
    assert shapes == {"stem": (3, 16, 14, 14), "layer1": (3, 16, 14, 14), "layer2": (3, 32, 7, 7),
                      "layer3": (3, 64, 4, 4), "layer4": (3, 128, 2, 2)}
    assert sum(p.numel() for p in net.parameters()) == HAND_PARAMS == 13_330
    bench = load_script("bench_latency")
    assert bench.macs(net, torch.rand(1, 1, 28, 28)) == sum(HAND_MACS.values()) == 211_472
    # the point of it: far fewer MACs than the kd bundle's ResNet student with a full-resolution stem
    kd_student = bench.build("kd", "network_def")
    assert bench.macs(kd_student, torch.rand(1, 1, 28, 28)) > 15 * sum(HAND_MACS.values())


def test_3d_and_bad_stage_lists():
    assert FastStudent(spatial_dims=3, num_classes=3)(torch.rand(2, 1, 28, 28, 28)).shape == (2, 3)
    with pytest.raises(ValueError, match="one entry per stage"):
        FastStudent(channels=(8, 16), strides=(1, 2, 2))


OVERLAYS = [
    ("kd", ["train.json", "student_fast.json"]),
    ("kd", ["inference.json", "student_fast.json"]),
    ("kdml_cls", ["train.json", "student_fast.json"]),
    ("kdml_cls", ["inference.json", "student_fast.json"]),
    ("mmkd", ["train.json", "student_fast.json"]),
    ("weckd", ["train.json", "student_fast.json"]),
    ("emtkd", ["train_classification.json", "student_fast_classification.json"]),
]


@pytest.mark.parametrize("bundle,files", OVERLAYS)
def test_overlay_selects_the_fast_student(bundle, files):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f) for f in files])
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, FastStudent)
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    if files[0].startswith("train_classification"):
        shape = [1, *parser["spatial_size"]]
    else:
        shape = [image["num_channels"], *image["spatial_shape"]]
    assert net.eval()(torch.rand(2, *shape)).shape == (2, parser["num_classes"])
    # every copy of the student definition (averaged model, student alone) follows the overlay
    for key in ("train#averaged_def", "student_alone#network_def"):
        if key in parser:
            assert isinstance(parser.get_parsed_content(key), FastStudent)
