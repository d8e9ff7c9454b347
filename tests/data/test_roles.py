from __future__ import annotations

import pytest

from monai_kd.data import held_out_role, medmnist_datalist


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
