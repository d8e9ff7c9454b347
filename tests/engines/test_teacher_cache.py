"""Teacher-output cache: exact where it must be, keyed so stale outputs are never served (issue 15)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.networks.nets import ResNet
from monai.transforms import Compose, EnsureTyped, RandAffined, RandFlipd
from monai.utils import set_determinism

from monai_kd.engines import DistillationTrainer, SeededViews, TeacherCacheStep, TrainingStep
from monai_kd.losses import DistillationLoss, FeatureKDLoss, MultiTeacherKDLoss


def _net(width: int) -> ResNet:
    return ResNet("basic", [1, 1, 1, 1], [width] * 4, spatial_dims=2, n_input_channels=1, num_classes=2)


def _datalist(n: int = 24) -> list[dict]:
    # random tensors: the cache must reproduce the live teachers on *any* input; no result is claimed from them
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, 12, 12, generator=g), "label": i % 2, "index": 100 + i} for i in range(n)]


class CountingTeacher(torch.nn.Module):
    """A teacher that counts the rows it has been run on."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += len(x)
        return self.net(x)


def _train(step=None, transform=None, dataset=None, epochs=3, teachers=None, seed=0, features=True):
    set_determinism(seed=seed)
    teachers = teachers if teachers is not None else [CountingTeacher(_net(8)), CountingTeacher(_net(6))]
    student = _net(4)
    feature_losses = [FeatureKDLoss("layer2", "net.layer2", teacher_index=0, student_channels=4, teacher_channels=8)]
    loss = DistillationLoss(
        task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss(temperature=2.0),
        feature_losses=feature_losses if features else (), task_weight=0.5, kd_weight=0.5,
    )
    dataset = dataset if dataset is not None else SeededViews(_datalist(), transform or EnsureTyped(["image"]), 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
    trainer = DistillationTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=loader, network=student,
        optimizer=torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.05),
        loss_function=loss, teachers=teachers, step=step,
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    set_determinism(seed=None)
    return losses, teachers, trainer


def test_cached_and_live_training_give_the_same_losses_without_augmentation():
    live, live_teachers, _ = _train()
    cache = TeacherCacheStep()
    cached, cached_teachers, trainer = _train(step=cache)
    assert len(cached) == len(live) == 9
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(live), rtol=1e-5, atol=1e-6)
    assert cached[:3] == live[:3]  # first epoch: the same live calls, bit for bit
    # the teachers ran on the 24 samples once (first epoch), not three times; epochs 2-3 were served from the cache
    assert [t.rows for t in live_teachers] == [72, 72]
    assert [t.rows for t in cached_teachers] == [24, 24]
    assert (cache.misses, cache.hits) == (24, 48)
    assert "0/feat/net.layer2" in cache.store.arrays  # the tapped feature the loss uses is cached too


class CheckAgainstLiveTeachers(TrainingStep):
    """Inner step that recomputes the teachers live on the batch and compares them with what it was given."""

    def __init__(self) -> None:
        self.max_error = 0.0

    def before_step(self, ctx) -> None:
        live, live_features = ctx.engine.teacher_forward(ctx.inputs)
        for a, b in zip(ctx.teacher_outputs, live):
            self.max_error = max(self.max_error, (a - b).abs().max().item())
        for fa, fb in zip(ctx.teacher_features, live_features):
            for k in fb:
                self.max_error = max(self.max_error, (fa[k] - fb[k]).abs().max().item())


def test_seeded_views_are_reproducible_and_the_cache_serves_the_drawn_view():
    transform = Compose([
        EnsureTyped(["image"]),
        RandFlipd(["image"], prob=0.5, spatial_axis=0),
        RandAffined(["image"], prob=1.0, rotate_range=0.3, translate_range=(2, 2)),
    ])
    views = SeededViews(_datalist(), transform, num_views=3, seed=7)
    torch.manual_seed(0)
    seen: dict[tuple[int, int], torch.Tensor] = {}
    for _ in range(12):
        for i in range(len(views)):
            item = views[i]
            key = (item["index"], item["view"])
            if key in seen:
                assert torch.equal(torch.as_tensor(item["image"]), seen[key])  # the same view, the same image
            seen[key] = torch.as_tensor(item["image"]).clone()
    assert len(seen) == 3 * len(views)  # every view drawn; the views differ from each other
    assert not torch.equal(seen[(100, 0)], seen[(100, 1)])

    check = CheckAgainstLiveTeachers()
    cache = TeacherCacheStep(step=check)
    _train(step=cache, dataset=SeededViews(_datalist(), transform, num_views=3, seed=7), epochs=6)
    assert cache.hits > 0 and cache.misses <= 3 * 24
    assert check.max_error < 1e-5  # served outputs and features are those of the augmented image the student saw


def test_changed_teacher_weights_or_transform_invalidate_the_cache(tmp_path):
    teachers = [CountingTeacher(_net(8))]
    cache = TeacherCacheStep(storage="memmap", cache_dir=str(tmp_path))
    _train(step=cache, teachers=teachers, epochs=2, features=False)
    first_key = cache.key
    assert teachers[0].rows == 24 and (tmp_path / first_key[:16] / "meta.json").is_file()

    # a new run with the same teacher and transform reuses the memory-mapped outputs: no teacher pass at all
    cache = TeacherCacheStep(storage="memmap", cache_dir=str(tmp_path))
    _train(step=cache, teachers=teachers, epochs=1, features=False)
    assert cache.key == first_key and teachers[0].rows == 24 and cache.misses == 0

    # changed checkpoint: a new key, every output recomputed
    with torch.no_grad():
        teachers[0].net.fc.bias.add_(1.0)
    cache = TeacherCacheStep(storage="memmap", cache_dir=str(tmp_path))
    _train(step=cache, teachers=teachers, epochs=1, features=False)
    assert cache.key != first_key and teachers[0].rows == 48 and cache.misses == 24

    # changed transform parameter: a new key again
    other = SeededViews(_datalist(), Compose([EnsureTyped(["image"]), RandFlipd(["image"], prob=0.0)]), 0)
    second_key = cache.key
    cache = TeacherCacheStep(storage="memmap", cache_dir=str(tmp_path))
    _train(step=cache, teachers=teachers, dataset=other, epochs=1, features=False)
    assert cache.key not in (first_key, second_key) and cache.misses == 24


def test_refuses_batches_without_identity_and_bad_storage():
    data = [{k: v for k, v in d.items() if k != "index"} for d in _datalist()]
    with pytest.raises(KeyError, match="stable sample identity"):
        _train(step=TeacherCacheStep(), dataset=SeededViews(data, None, 0), epochs=1)
    with pytest.raises(ValueError, match="cache_dir"):
        TeacherCacheStep(storage="memmap")
    with pytest.raises(ValueError, match="num_views"):
        SeededViews(data, None, -1)


def _semi_supervised(cache: bool) -> tuple[list[float], list[CountingTeacher]]:
    """FixMatch + KD trainer (EMTKD part 3): labelled rows may come from the cache, the unlabelled weak view never."""
    from monai.transforms import CopyItemsd, RandGaussianNoised

    from monai_kd.engines import SemiSupervisedDistillationTrainer, attach_teacher_cache
    from monai_kd.losses import FixMatchLoss

    set_determinism(seed=0)
    g = torch.Generator().manual_seed(1)
    unlabelled = [{"image": torch.rand(1, 12, 12, generator=g)} for _ in range(6)]
    views = Compose([
        CopyItemsd(keys="image", times=2, names=["image_weak", "image_strong"]),
        RandFlipd(keys=["image_weak", "image_strong"], prob=0.5, spatial_axis=0),
        RandGaussianNoised(keys="image_strong", prob=1.0, std=0.5),
    ])
    teachers = [CountingTeacher(_net(8)), CountingTeacher(_net(6))]
    student = _net(4)
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss(temperature=2.0), kd_weight=0.5)
    trainer = SemiSupervisedDistillationTrainer(
        device="cpu", max_epochs=3,
        train_data_loader=torch.utils.data.DataLoader(SeededViews(_datalist(), EnsureTyped(["image"]), 0), batch_size=8, shuffle=True),
        network=student, optimizer=torch.optim.SGD(student.parameters(), lr=0.05), loss_function=loss, teachers=teachers,
        unlabeled_data_loader=torch.utils.data.DataLoader(SeededViews(unlabelled, views, 0), batch_size=3),
        fixmatch_loss=FixMatchLoss(threshold=0.0),
    )
    if cache:
        attach_teacher_cache(trainer)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    set_determinism(seed=None)
    return losses, teachers


def test_semi_supervised_trainer_switched_to_the_cache_keeps_its_losses():
    live, live_teachers = _semi_supervised(cache=False)
    cached, cached_teachers = _semi_supervised(cache=True)
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(live), rtol=1e-5, atol=1e-6)
    # live: 3 epochs x (24 labelled + 3 batches x 3 weak); cached: 24 labelled once + the weak rows every time
    assert [t.rows for t in live_teachers] == [3 * (24 + 9)] * 2
    assert [t.rows for t in cached_teachers] == [24 + 3 * 9] * 2


def test_kd_bundle_switch_trains_the_student_from_cached_teacher_outputs(tmp_path, data_dir):
    """``teacher_cache=true`` in bundles/kd: real BreastMNIST, tiny run; the teacher ran once per (image, view)."""
    from monai.bundle import ConfigParser

    from conftest import REPO

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "kd" / "configs" / "train.json"))
    parser.read_meta(str(REPO / "bundles" / "kd" / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(data_dir / "breastmnist"), "teacher_epochs": 1,
                   "max_epochs": 3, "batch_size": 128, "teacher_cache": True, "teacher_cache_views": 2, "device": "cpu"})
    for expression in ("initialize", "run_teacher", "run_student"):
        parser.get_parsed_content(expression)
    trainer = parser.get_parsed_content("train#trainer")
    cache = trainer.step
    assert isinstance(cache, TeacherCacheStep) and isinstance(trainer.data_loader.dataset, SeededViews)
    assert cache.misses <= 546 * 2 and cache.hits > 0 and cache.hits + cache.misses == 3 * 546
    assert (tmp_path / "models" / "model.pt").is_file()


def test_transform_description_tracks_parameters_not_random_state_or_addresses():
    import json

    from monai_kd.engines.teacher_cache import describe_transform

    def make(rotate):
        return Compose([EnsureTyped(["image"]), RandAffined(["image"], prob=0.5, rotate_range=rotate, translate_range=(2, 2))])

    first, second = make(0.1), make(0.1)
    first.set_random_state(1)
    first(_datalist(1)[0])  # drawing numbers changes the random state only
    text = json.dumps(describe_transform(first), sort_keys=True, default=str)
    assert text == json.dumps(describe_transform(second), sort_keys=True, default=str)
    assert text != json.dumps(describe_transform(make(0.2)), sort_keys=True, default=str)
    assert " at 0x" not in text
    # the output probe sees a changed parameter too, and does not change the transform it probes
    from monai_kd.engines.teacher_cache import transform_fingerprint

    views = SeededViews(_datalist(4), make(0.1), num_views=2)
    state = views.transform.transforms[1].R.get_state()[1].copy()
    assert transform_fingerprint(views) == transform_fingerprint(SeededViews(_datalist(4), make(0.1), num_views=2))
    assert transform_fingerprint(views) != transform_fingerprint(SeededViews(_datalist(4), make(0.2), num_views=2))
    assert (views.transform.transforms[1].R.get_state()[1] == state).all()


def _kdml(step=None, teacher_mode="offline", epochs=3):
    """Two students with offline KD (logit + feature from the frozen teacher) and mutual learning between them."""
    from monai_kd.engines import MultiStudentTrainer
    from monai_kd.losses import KDLoss, MutualLearningLoss

    set_determinism(seed=0)
    teacher = CountingTeacher(_net(8))
    students = {"s1": _net(4), "s2": _net(4)}
    ce = torch.nn.CrossEntropyLoss()
    terms = [
        {"name": "s1_task", "learner": "s1", "kind": "task", "loss": ce},
        {"name": "s2_task", "learner": "s2", "kind": "task", "loss": ce},
        {"name": "s1_kd", "learner": "s1", "kind": "logit", "source": "teacher", "loss": KDLoss(temperature=2.0)},
        {"name": "s2_feat", "learner": "s2", "kind": "feature", "source": "teacher", "weight": 0.5,
         "loss": FeatureKDLoss("layer2", "net.layer2", student_channels=4, teacher_channels=8)},
        {"name": "s1_s2_ml", "learner": "s1", "kind": "logit", "source": "s2", "loss": MutualLearningLoss()},
    ]
    if teacher_mode == "online":
        terms = [t for t in terms if t["name"] != "s2_feat"] + [
            {"name": "t_task", "learner": "teacher", "kind": "task", "loss": ce}]
    loader = torch.utils.data.DataLoader(SeededViews(_datalist(), EnsureTyped(["image"]), 0), batch_size=8, shuffle=True)
    trainer = MultiStudentTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=loader, students=students,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05), loss_terms=terms,
        teacher=teacher, teacher_mode=teacher_mode, step=step,
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    set_determinism(seed=None)
    return losses, teacher


def test_kdml_offline_teacher_switched_to_the_cache_keeps_its_losses():
    """KDML's offline-KD variants: the frozen teacher's logits and tapped feature come from the cache in epochs 2-3
    and every loss equals the live run's; mutual learning between the students is untouched."""
    from monai_kd.engines import MultiStudentStep

    live, live_teacher = _kdml()
    cache = TeacherCacheStep(MultiStudentStep())
    cached, cached_teacher = _kdml(step=cache)
    assert len(cached) == len(live) == 9
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(live), rtol=1e-5, atol=1e-6)
    assert (live_teacher.rows, cached_teacher.rows) == (72, 24)
    assert (cache.misses, cache.hits) == (24, 48)
    assert "0/feat/net.layer2" in cache.store.arrays


def test_kdml_cache_refused_where_the_teacher_is_not_frozen():
    """An online teacher changes every step (and mutual learning alone has none): there is nothing to cache."""
    from monai_kd.engines import MultiStudentStep

    with pytest.raises(ValueError, match="frozen teachers"):
        _kdml(step=TeacherCacheStep(MultiStudentStep()), teacher_mode="online", epochs=1)
    with pytest.raises(TypeError, match="MultiStudentStep"):
        _kdml(step=TeacherCacheStep(), epochs=1)
