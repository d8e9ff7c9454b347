from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_kd.data import DatalistProvider, held_out_role, medmnist_datalist
from monai_kd.data.roles import quiz_role


def test_quiz_role_is_seeded_stratified_and_disjoint_from_training(data_dir):
    items = medmnist_datalist(data_dir / "breastmnist", "train")
    quiz = held_out_role(items, "quiz", fraction=0.1, seed=3)
    train = held_out_role(items, "train", fraction=0.1, seed=3)
    q, t = {it["index"] for it in quiz}, {it["index"] for it in train}
    assert not q & t and q | t == {it["index"] for it in items}
    assert len(quiz) == pytest.approx(0.1 * len(items), abs=2)
    for cls in (0, 1):  # each class held out in proportion
        n_cls = sum(int(it["label"]) == cls for it in items)
        assert sum(int(it["label"]) == cls for it in quiz) == round(0.1 * n_cls)
    assert [it["index"] for it in held_out_role(items, "quiz", 0.1, seed=3)] == [it["index"] for it in quiz]
    assert {it["index"] for it in held_out_role(items, "quiz", 0.1, seed=4)} != q


def test_bad_arguments():
    items = [{"label": 0}, {"label": 1}]
    with pytest.raises(ValueError, match="role"):
        held_out_role(items, "val")
    with pytest.raises(ValueError, match="fraction"):
        held_out_role(items, "quiz", fraction=1.0)
    with pytest.raises(ValueError, match="two items"):
        held_out_role(items[:1], "quiz")


def _png_datalist(tmp_path, data_dir, quiz: slice, training: slice, validation: slice):
    """A user's datalist JSON over real BreastMNIST images written as PNG files (paths relative to the JSON)."""
    from PIL import Image

    items = medmnist_datalist(data_dir / "breastmnist", "train")[:30]
    (tmp_path / "img").mkdir(exist_ok=True)
    entries = []
    for k, it in enumerate(items):
        Image.fromarray((np.asarray(it["image"])[0] * 255).round().astype(np.uint8)).save(tmp_path / "img" / f"{k}.png")
        entries.append({"image": f"img/{k}.png", "label": int(it["label"])})
    listed = {"training": entries[training], "validation": entries[validation], "test": entries[validation]}
    if quiz is not None:
        listed["quiz"] = entries[quiz]
    path = tmp_path / "my.json"
    path.write_text(json.dumps(listed))
    return DatalistProvider(datalist=path, spatial_size=(28, 28), channels=1, intensity="unit")


def _names(items):
    return [Path(it["path"]).name for it in items]


def test_quiz_list_of_a_users_datalist_is_the_quiz(tmp_path, data_dir):
    provider = _png_datalist(tmp_path, data_dir, quiz=slice(20, 25), training=slice(0, 20), validation=slice(25, 30))
    quiz = quiz_role(provider, "quiz", fraction=0.5, seed=1)
    assert _names(quiz) == [f"{k}.png" for k in range(20, 25)]  # exactly the listed items, not a carved fraction
    train = quiz_role(provider, "train", fraction=0.5, seed=1)
    assert _names(train) == [f"{k}.png" for k in range(20)]  # the whole training list, disjoint from the quiz
    assert _names(quiz_role(provider, "train", hold_out=False)) == _names(train)
    assert quiz[0]["image"].shape == (1, 28, 28)


def test_quiz_list_sharing_an_image_with_training_is_refused(tmp_path, data_dir):
    provider = _png_datalist(tmp_path, data_dir, quiz=slice(18, 25), training=slice(0, 20), validation=slice(25, 30))
    with pytest.raises(ValueError, match=r"shares 2 image\(s\) with the training data, e.g. .*18.png"):
        quiz_role(provider, "quiz")


def test_without_a_quiz_list_the_quiz_is_carved_from_training(tmp_path, data_dir):
    provider = _png_datalist(tmp_path, data_dir, quiz=None, training=slice(0, 20), validation=slice(25, 30))
    training = provider("train")
    quiz, train = quiz_role(provider, "quiz", 0.2, seed=3), quiz_role(provider, "train", 0.2, seed=3)
    assert _names(quiz) == _names(held_out_role(training, "quiz", 0.2, seed=3)) and len(quiz) == 4
    assert not set(_names(quiz)) & set(_names(train)) and len(quiz) + len(train) == 20
    assert len(quiz_role(provider, "train", 0.2, seed=3, hold_out=False)) == 20  # a method without a quiz step
    with pytest.raises(ValueError, match="role"):
        quiz_role(provider, "val")
