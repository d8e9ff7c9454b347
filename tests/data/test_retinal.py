# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""The retinal benchmark's datalists: split by person, sizes, sources whole, held-out people never in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_kd.data.domain_datalist import domain_datalist
from monai_kd.data.retinal import RETINAL_SPLIT_SIZES, retinal_datalist, write_retinal_datalist

TRAINING_ROLES = ("source", "STARE", "VEVIO", "target_labelled", "target_unlabelled", "target")
SEEDS = (None, 0, 1, 2, 3, 7)


def _people(items):
    return {i["subject"] for i in items}


@pytest.mark.parametrize("split_seed", SEEDS)
def test_no_held_out_person_reaches_a_training_role(retinal_dir, tmp_path, split_seed):
    path = write_retinal_datalist(retinal_dir, tmp_path / "retinal.json", split_seed)
    roles = {r: domain_datalist(path, r, load=False) for r in (*TRAINING_ROLES, "val", "test")}
    held_out = _people(roles["val"]) | _people(roles["test"])
    assert len(held_out) == 14 and not _people(roles["val"]) & _people(roles["test"])
    for role in TRAINING_ROLES:
        assert not _people(roles[role]) & held_out, role
        # nor by file: the same image under another subject name would be a second door
        assert not {i["image"] for i in roles[role]} & {i["image"] for i in roles["val"] + roles["test"]}, role
    assert not _people(roles["target_labelled"]) & _people(roles["target_unlabelled"])


@pytest.mark.parametrize("split_seed", SEEDS)
def test_sizes_sources_whole_and_fields(retinal_dir, split_seed):
    lists = retinal_datalist(retinal_dir, split_seed)
    assert {k: len(lists[k]) for k in RETINAL_SPLIT_SIZES} == RETINAL_SPLIT_SIZES
    assert len(lists["STARE"]) == 20 and len(lists["VEVIO"]) == 16 and len(lists["source"]) == 36
    target = [i for k in RETINAL_SPLIT_SIZES for i in lists[k]]
    assert len(_people(target)) == 30 and {i["domain"] for i in target} == {"AV-WIDE"}
    assert not _people(target) & _people(lists["source"])  # no person in two domains
    for items in lists.values():
        assert all("subject" in i and "domain" in i for i in items)
    assert all("label" not in i for i in lists["target_unlabelled"])  # unlabelled: no label path at all
    assert all(Path(i["label"]).is_file() for k in ("source", "target_labelled", "validation", "test") for i in lists[k])
    assert all(Path(i["fov"]).is_file() for i in lists["VEVIO"])


def test_default_is_splits_json_and_seeds_redraw_by_person(retinal_dir):
    proposal = json.loads((retinal_dir / "splits.json").read_text())["target_split"]
    default = retinal_datalist(retinal_dir)
    assert [Path(i["image"]).name for i in default["test"]] == proposal["test"]
    assert [Path(i["image"]).name for i in default["target_labelled"]] == proposal["labelled"]
    draws = [frozenset(_people(retinal_datalist(retinal_dir, s)["test"])) for s in (1, 2, 3)]
    assert len(set(draws)) == 3 and frozenset(_people(default["test"])) not in draws
    assert retinal_datalist(retinal_dir, 1) == retinal_datalist(retinal_dir, 1)


def test_unlabelled_target_items_carry_no_label(retinal_dir, tmp_path):
    path = write_retinal_datalist(retinal_dir, tmp_path / "retinal.json")
    for role in ("target_unlabelled", "target"):
        items = domain_datalist(path, role, load=False)
        assert all(int(i["label"]) == -1 for i in items), role  # a -1 marker, never a mask path


def test_a_held_out_person_in_a_training_role_is_refused(retinal_dir, tmp_path):
    content = json.loads(Path(write_retinal_datalist(retinal_dir, tmp_path / "retinal.json")).read_text())
    leaked = dict(content["test"][0])
    leaked.pop("label")
    content["target_unlabelled"].append(leaked)  # a test person slipped into the unlabelled pool
    bad = tmp_path / "leaky.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="held-out people|must stay in one split"):
        domain_datalist(bad, "target_unlabelled", load=False)
    with pytest.raises(ValueError, match="held-out people|must stay in one split"):
        domain_datalist(bad, "target", load=False)


def test_label_maps_load_binarised_and_resized_by_scale(tmp_path):
    """A hand-worked 4x4 mask: a 2x2 vessel block at 255 becomes 1; halved by area it is one pixel of 1."""
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 1] = 200  # green channel
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 255
    mask[2, 2] = 255  # a 1-pixel vessel: a quarter of its 2x2 block, dropped at half scale
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    (tmp_path / "d.json").write_text(
        json.dumps(
            {
                "source": [{"image": "img.png", "label": "mask.png", "subject": "a", "fov": "mask.png"}],
                "target_labelled": [{"image": "img.png", "label": "mask.png", "subject": "b"}],
                "target_unlabelled": [{"image": "img.png", "subject": "c"}],
            }
        )
    )
    (item,) = domain_datalist(tmp_path / "d.json", "source", scale=0.5, channel=1)
    assert item["image"].shape == (1, 2, 2) and np.allclose(item["image"], 200.0)
    assert item["label"].dtype == np.uint8
    np.testing.assert_array_equal(item["label"][0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(item["fov"][0], [[1, 0], [0, 0]])
    (full,) = domain_datalist(tmp_path / "d.json", "source")
    assert int(full["label"].sum()) == 5 and full["image"].shape == (1, 4, 4)
    assert np.allclose(full["image"], 200.0 / 3)  # grey: channels averaged
