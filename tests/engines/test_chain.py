"""WeCKD chain: the per-link label partition (hand-checked on indices) and the runner's resume at the first missing link.

The runner tests use tiny random tensors: they check mechanics (which links train, which teacher they see), not accuracy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import Dataset
from torch import nn

from monai_kd.engines import DistillationChain, chain_datalists, chain_partition, merge_datalists
from monai_kd.engines import chain as chain_module
from monai_kd.losses import DistillationLoss, MultiTeacherKDLoss

# 4 items of class 0 (indices 0-3) and 8 of class 1 (indices 4-11)
LABELS = [0] * 4 + [1] * 8


def _classes(idx: np.ndarray) -> tuple[int, int]:
    labels = np.asarray(LABELS)[idx]
    return int((labels == 0).sum()), int((labels == 1).sum())


def test_disjoint_links_hand_checked():
    # fractions 1/4, 1/4, 1/2 of each class: class 0 -> 1, 1, 2 items; class 1 -> 2, 2, 4 items; nothing left over
    links = chain_partition(LABELS, [0.25, 0.25, 0.5], seed=3)
    assert [len(link) for link in links] == [3, 3, 6]
    assert [_classes(link) for link in links] == [(1, 2), (1, 2), (2, 4)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not set(links[i]) & set(links[j]), f"links {i + 1} and {j + 1} share labelled items"
    assert sorted(np.concatenate(links).tolist()) == list(range(12))


def test_overlap_shares_exactly_the_configured_items():
    # fractions 1/2, 1/2: class 0 -> 2 items per link, round(0.5 * 2) = 1 shared; class 1 -> 4 per link, 2 shared
    first, second = chain_partition(LABELS, [0.5, 0.5], overlap=0.5, seed=0)
    assert len(first) == len(second) == 6
    shared = set(first) & set(second)
    assert len(shared) == 3 and _classes(np.array(sorted(shared))) == (1, 2)
    assert len(set(first) | set(second)) == 9


def test_groups_keep_every_patient_in_one_link():
    groups = ["p1", "p1", "p2", "p2", "p2", "p3"]
    links = chain_partition([0, 1, 0, 1, 1, 0], [1 / 3] * 3, groups=groups, seed=0)
    assert sorted(link.tolist() for link in links) == [[0, 1], [2, 3, 4], [5]]


def test_partition_is_seeded():
    a = chain_partition(LABELS, [0.25, 0.25], seed=1)
    b = chain_partition(LABELS, [0.25, 0.25], seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    draws = {tuple(chain_partition(LABELS, [0.25, 0.25], seed=s)[0]) for s in range(10)}
    assert len(draws) > 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fractions": [0.5, 0.6]}, "need more items of class"),
        ({"fractions": [0.0]}, "fractions must be"),
        ({"fractions": [0.2], "overlap": 1.0}, "overlap must be"),
        ({"fractions": [0.5, 0.5], "groups": ["a"] * 11}, "groups for 12 labels"),
    ],
)
def test_partition_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chain_partition(LABELS, **kwargs)


def test_datalists_and_union():
    items = [{"label": label, "index": i} for i, label in enumerate(LABELS)]
    links = chain_datalists(items, [0.5, 0.5], overlap=0.5, seed=0)
    expected = chain_partition(LABELS, [0.5, 0.5], overlap=0.5, seed=0)
    assert [[x["index"] for x in link] for link in links] == [e.tolist() for e in expected]
    assert len(merge_datalists(links)) == 9  # the shared items count once


# --------------------------------------------------------------------------- the runner


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _chain(tmp_path, links: int = 3, **kwargs) -> DistillationChain:
    gen = torch.Generator().manual_seed(0)
    datasets = [
        Dataset([{"image": torch.rand(1, 4, 4, generator=gen), "label": torch.tensor(k % 2), "index": 8 * i + k} for k in range(8)])
        for i in range(links)
    ]
    loss = DistillationLoss(nn.CrossEntropyLoss(), MultiTeacherKDLoss(2.0), task_weight=0.5, kd_weight=0.5)
    args = dict(device="cpu", max_epochs=1, networks=TinyNet, datasets=datasets, loss_function=loss,
                optimizer=lambda params: torch.optim.SGD(params, lr=0.1), ckpt_dir=tmp_path, batch_size=4, progress=False)
    return DistillationChain(**{**args, **kwargs})


@pytest.fixture
def spy(monkeypatch):
    """Record (link, teacher state) of every link the runner trains."""
    trained = []
    original = DistillationChain._train_link

    def wrapper(self, link, teacher, loader, epochs):
        trained.append((link, None if teacher is None else {k: v.clone() for k, v in teacher.state_dict().items()}))
        return original(self, link, teacher, loader, epochs)

    monkeypatch.setattr(DistillationChain, "_train_link", wrapper)
    return trained


def test_chain_trains_links_in_order_each_from_the_previous(tmp_path, spy):
    records = _chain(tmp_path).run()
    assert [r["link"] for r in records] == [1, 2, 3]
    assert [link for link, _ in spy] == [1, 2, 3]
    assert spy[0][1] is None  # link 1: labels only
    for link, teacher in spy[1:]:
        saved = torch.load(tmp_path / f"link_{link - 1}.pt", weights_only=True)
        assert all(torch.equal(teacher[k], saved[k]) for k in saved), f"link {link} did not learn from link {link - 1}"
    assert torch.equal(torch.load(tmp_path / "model.pt")["layer.1.weight"], torch.load(tmp_path / "link_3.pt")["layer.1.weight"])
    stored = json.loads((tmp_path / "link.json").read_text())["links"]
    assert [r["train_items"] for r in stored] == [8, 8, 8] and [r["teacher"] for r in stored] == [None, "link_1", "link_2"]


def test_first_teacher_distils_into_link_1(tmp_path, spy):
    teacher = TinyNet()
    records = _chain(tmp_path, links=2, first_teacher=teacher).run()
    assert [r["teacher"] for r in records] == ["first_teacher", "link_1"]
    assert all(torch.equal(spy[0][1][k], v) for k, v in teacher.state_dict().items())


def _run_until_crash(chain: DistillationChain, monkeypatch, crash_link: int) -> None:
    """Run ``chain`` with a crash (a power cut) when training reaches ``crash_link``."""
    original = DistillationChain._train_link

    def crashing(self, link, *args):
        if link == crash_link:
            raise RuntimeError("power cut")
        return original(self, link, *args)

    with monkeypatch.context() as m:
        m.setattr(DistillationChain, "_train_link", crashing)
        with pytest.raises(RuntimeError, match="power cut"):
            chain.run()


def test_broken_chain_resumes_at_first_missing_link(tmp_path, spy, monkeypatch):
    _run_until_crash(_chain(tmp_path), monkeypatch, crash_link=2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["link_1.pt"]
    link_1 = (tmp_path / "link_1.pt").read_bytes()

    spy.clear()
    _chain(tmp_path).run()
    assert [link for link, _ in spy] == [2, 3]  # link 1 reused, not retrained
    assert (tmp_path / "link_1.pt").read_bytes() == link_1

    spy.clear()
    (tmp_path / "link_2.pt").unlink()  # a middle link lost: it and every link after it are retrained
    _chain(tmp_path).run()
    assert [link for link, _ in spy] == [2, 3]

    spy.clear()
    _chain(tmp_path).run()  # complete chain: nothing to do
    assert spy == []


def test_resumed_chain_equals_uninterrupted_chain(tmp_path, monkeypatch):
    _chain(tmp_path / "whole", seed=7).run()
    _run_until_crash(_chain(tmp_path / "broken", seed=7), monkeypatch, crash_link=3)
    torch.manual_seed(123)  # whatever happened in between
    _chain(tmp_path / "broken", seed=7).run()
    whole, resumed = (torch.load(tmp_path / d / "link_3.pt", weights_only=True) for d in ("whole", "broken"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_checkpoint_without_its_record_is_retrained(tmp_path, spy):
    _chain(tmp_path).run()
    records = json.loads((tmp_path / "link.json").read_text())
    (tmp_path / "link.json").write_text(json.dumps({"links": records["links"][:1]}))  # crash between the two writes
    spy.clear()
    _chain(tmp_path).run()
    assert [link for link, _ in spy] == [2, 3]


def test_other_configuration_in_the_folder_raises(tmp_path, spy):
    _chain(tmp_path).run()
    with pytest.raises(ValueError, match="another configuration"):
        _chain(tmp_path, max_epochs=2).run()
    spy.clear()
    _chain(tmp_path, max_epochs=2, overwrite=True).run()
    assert [link for link, _ in spy] == [1, 2, 3]


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="2 networks for 3 links"):
        _chain(tmp_path, networks=[TinyNet, TinyNet])
    with pytest.raises(ValueError, match="1 losses for 2 distilled links"):
        _chain(tmp_path, loss_function=[DistillationLoss(nn.CrossEntropyLoss())])
    with pytest.raises(ValueError, match="empty"):
        _chain(tmp_path, datasets=[Dataset([])])
    learned = DistillationLoss(nn.CrossEntropyLoss(), feature_losses=[nn.Linear(1, 1)])  # a loss with parameters
    with pytest.raises(ValueError, match="one loss per link"):
        _chain(tmp_path, loss_function=learned)
    assert chain_module.__all__  # the module's public names exist


def test_distributed_chain_in_a_one_process_group(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29517")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        records = _chain(tmp_path, distributed=True).run()
    finally:
        dist.destroy_process_group()
    assert [r["link"] for r in records] == [1, 2, 3]
    assert "module.layer.1.weight" not in torch.load(tmp_path / "link_3.pt", weights_only=True)  # unwrapped weights
