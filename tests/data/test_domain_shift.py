# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Tests of :mod:`monai_kd.data.domain_shift` on the real PneumoniaMNIST file in ``../shared/data``."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from monai_kd.data import medmnist_datalist
from monai_kd.data.domain_shift import DOMAINS, AcquisitionShift, domain_partition, shifted_medmnist_datalist

DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
PNEUMONIA = DATA_ROOT / "pneumoniamnist"

needs_data = pytest.mark.skipif(not PNEUMONIA.is_dir(), reason=f"shared PneumoniaMNIST data missing: {PNEUMONIA}")


def _assert_one_line(exc_info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@functools.cache
def _raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    items = medmnist_datalist(PNEUMONIA, split)
    return np.stack([item["image"] for item in items]), np.array([item["label"] for item in items])


@functools.cache
def _shifted(split: str, domain: str, seed: int = 0) -> tuple[dict, ...]:
    return tuple(shifted_medmnist_datalist(PNEUMONIA, split, domain, seed=seed))


def _high_frequency_energy(images: np.ndarray) -> float:
    """Mean spectral power above 0.25 cycles/pixel, relative to the total power."""
    power = np.abs(np.fft.fft2(images[:, 0])) ** 2
    freq = np.fft.fftfreq(images.shape[-1])
    radius = np.hypot(freq[:, None], freq[None, :])
    return float(power[:, radius > 0.25].sum() / power.sum())


# --------------------------------------------------------------------------- datalist on real data


@needs_data
@pytest.mark.parametrize("split", ["val", "test"])
def test_domains_are_disjoint_stratified_and_cover_the_split(split: str) -> None:
    raw, labels = _raw(split)
    indices = {domain: [item["index"] for item in _shifted(split, domain)] for domain in DOMAINS}
    assert sorted(i for part in indices.values() for i in part) == list(range(len(raw)))  # cover, no repeat
    for domain, part in indices.items():
        assert part == sorted(part)
        counts = np.bincount(labels[part], minlength=2)
        expected = np.bincount(labels, minlength=2) / len(DOMAINS)
        assert np.all(np.abs(counts - expected) <= 1), (domain, counts, expected)  # class-stratified
    partition = domain_partition(labels, seed=0)
    assert {d: p.tolist() for d, p in partition.items()} == indices


@needs_data
def test_items_format_range_and_labels() -> None:
    raw, labels = _raw("test")
    for domain in DOMAINS:
        items = _shifted("test", domain)
        assert len(items) == 208
        for item in items:
            assert set(item) == {"image", "label", "index", "domain"}
            assert item["domain"] == domain
            assert item["image"].shape == (1, 28, 28) and item["image"].dtype == np.float32
            assert isinstance(item["label"], np.int64) and item["label"] == labels[item["index"]]
        images = np.stack([item["image"] for item in items])
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert not np.allclose(images, raw[[item["index"] for item in items]], atol=0.02)


@needs_data
def test_item_is_the_domain_applied_to_the_raw_image() -> None:
    raw, _ = _raw("test")
    for domain, shift in DOMAINS.items():
        for item in _shifted("test", domain)[:5]:
            single = shift(raw[item["index"]], item["index"], seed=0)
            np.testing.assert_allclose(item["image"], single, rtol=0, atol=1e-6)


@needs_data
def test_seeded_determinism() -> None:
    first = shifted_medmnist_datalist(PNEUMONIA, "val", "source_b", seed=5)
    again = shifted_medmnist_datalist(PNEUMONIA, "val", "source_b", seed=5)
    assert [item["index"] for item in first] == [item["index"] for item in again]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    other = shifted_medmnist_datalist(PNEUMONIA, "val", "source_b", seed=6)
    assert [item["index"] for item in other] != [item["index"] for item in first]
    raw, _ = _raw("val")
    shift = DOMAINS["source_b"]
    assert not np.array_equal(shift(raw[0], 0, seed=5), shift(raw[0], 0, seed=6))  # the noise follows the seed
    assert not np.array_equal(shift(raw[0], 0, seed=5), shift(raw[0], 1, seed=5))  # ... and the index
    np.testing.assert_array_equal(shift(raw[0], 0, seed=5), shift(raw[0], 0, seed=5))


@needs_data
def test_labelled_and_unlabelled_are_disjoint_and_cover_the_domain() -> None:
    everything = shifted_medmnist_datalist(PNEUMONIA, "train", "target")
    true_label = {item["index"]: int(item["label"]) for item in everything}
    labelled = shifted_medmnist_datalist(PNEUMONIA, "train", "target", labelled_fraction=0.05, role="labelled")
    unlabelled = shifted_medmnist_datalist(PNEUMONIA, "train", "target", labelled_fraction=0.05, role="unlabelled")
    both = shifted_medmnist_datalist(PNEUMONIA, "train", "target", labelled_fraction=0.05, role="all")

    lab_idx, unl_idx = [i["index"] for i in labelled], [i["index"] for i in unlabelled]
    assert not set(lab_idx) & set(unl_idx)
    assert sorted(lab_idx + unl_idx) == sorted(true_label) == [i["index"] for i in both]
    counts = np.bincount([true_label[i] for i in true_label], minlength=2)
    assert np.bincount([int(i["label"]) for i in labelled]).tolist() == [round(0.05 * c) for c in counts]
    assert all(int(i["label"]) == true_label[i["index"]] for i in labelled)
    assert all(i["label"] == -1 and i["domain"] == "target" for i in unlabelled)
    assert [int(i["label"]) for i in both] == [true_label[i] if i in set(lab_idx) else -1 for i in true_label]
    by_index = {i["index"]: i["image"] for i in everything}
    for item in unlabelled[:10]:
        np.testing.assert_array_equal(item["image"], by_index[item["index"]])  # the same view whatever the role
    assert shifted_medmnist_datalist(PNEUMONIA, "val", "target", role="unlabelled") == []


# --------------------------------------------------------------------------- direction of every shift


@needs_data
def test_each_domain_shifts_statistics_in_the_intended_direction() -> None:
    raw, _ = _raw("test")
    index = list(range(len(raw)))
    views = {domain: shift(raw, index, seed=0) for domain, shift in DOMAINS.items()}
    hf_raw = _high_frequency_energy(raw)
    per_image_mean = raw.mean(axis=(1, 2, 3))

    # source_a: gamma 0.7 brightens every image; blur removes high frequencies
    assert np.all(views["source_a"].mean(axis=(1, 2, 3)) > per_image_mean)
    assert _high_frequency_energy(views["source_a"]) < 0.5 * hf_raw
    # source_b: gamma 1.4 darkens every image; noise adds high frequencies
    assert np.all(views["source_b"].mean(axis=(1, 2, 3)) < per_image_mean)
    assert _high_frequency_energy(views["source_b"]) > 2 * hf_raw
    # target: lower contrast (std down, values inside the window up to noise), fewer high frequencies
    assert views["target"].std() < 0.75 * raw.std()
    assert views["target"].min() > 0.0 and views["target"].max() < 1.0
    assert _high_frequency_energy(views["target"]) < hf_raw
    for view in views.values():
        assert view.shape == raw.shape and view.dtype == np.float32
        assert view.min() >= 0.0 and view.max() <= 1.0


@needs_data
def test_each_component_alone() -> None:
    raw, _ = _raw("test")
    raw = raw[:200]
    index = list(range(len(raw)))
    hf_raw = _high_frequency_energy(raw)

    low_res = AcquisitionShift("low", downsample=0.5)(raw, index)
    assert _high_frequency_energy(low_res) < 0.5 * hf_raw  # lower resolution removes high frequencies
    assert abs(low_res.mean() - raw.mean()) < 0.005  # ... but keeps the mean
    blurred = AcquisitionShift("blur", blur_sigma=0.7)(raw, index)
    assert _high_frequency_energy(blurred) < 0.5 * hf_raw
    assert abs(blurred.mean() - raw.mean()) < 0.005  # reflecting border: no dark frame
    assert AcquisitionShift("bright", gamma=0.7)(raw, index).mean() > raw.mean() + 0.03
    assert AcquisitionShift("dark", gamma=1.4)(raw, index).mean() < raw.mean() - 0.03
    windowed = AcquisitionShift("window", window=(0.15, 0.85))(raw, index)
    np.testing.assert_allclose(windowed, 0.15 + 0.7 * raw, atol=1e-6)  # contrast scaled by 0.7
    grey = np.full((300, 1, 28, 28), 0.5, np.float32)
    noisy = AcquisitionShift("noise", noise_std=0.06)(grey, list(range(300)))
    assert abs(float((noisy - grey).std()) - 0.06) < 0.002
    assert abs(float((noisy - grey).mean())) < 0.002
    assert _high_frequency_energy(AcquisitionShift("noise", noise_std=0.06)(raw, index)) > 2 * hf_raw


def test_shift_shapes_and_identity() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((3, 16, 20)).astype(np.float32)
    for shift in DOMAINS.values():
        out = shift(rgb, 7, seed=1)
        assert out.shape == rgb.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    batch = rng.random((4, 1, 28, 28)).astype(np.float32)
    batch[3] = batch[1]
    out = DOMAINS["target"](batch, [3, 1, 4, 1], seed=2)
    np.testing.assert_array_equal(out[1], out[3])  # same image, same index -> same view
    np.testing.assert_allclose(out[0], DOMAINS["target"](batch[0], 3, seed=2), atol=1e-6)
    np.testing.assert_allclose(AcquisitionShift("identity")(batch, range(4)), batch, atol=0)
    assert DOMAINS["target"](np.zeros((0, 1, 28, 28), np.float32), []).shape == (0, 1, 28, 28)
    assert list(DOMAINS) == ["source_a", "source_b", "target"]
    assert all(shift.name == name and shift.description for name, shift in DOMAINS.items())


def test_domain_partition_small_classes() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 3])  # classes smaller than the number of domains
    parts = domain_partition(labels, seed=0)
    assert list(parts) == list(DOMAINS)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    sizes = [len(p) for p in parts.values()]
    assert max(sizes) - min(sizes) <= 1
    for cls in np.unique(labels):
        per_domain = [int((labels[p] == cls).sum()) for p in parts.values()]
        assert max(per_domain) - min(per_domain) <= 1
    assert all(p.dtype == np.int64 for p in parts.values())
    assert {d: p.tolist() for d, p in domain_partition(labels, seed=0).items()} == {
        d: p.tolist() for d, p in parts.items()
    }


# --------------------------------------------------------------------------- errors


@needs_data
@pytest.mark.parametrize("domain", ["source_c", "Target", "", None])
def test_unknown_domain(domain: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        shifted_medmnist_datalist(PNEUMONIA, "test", domain)
    _assert_one_line(exc_info, f"Unknown domain {domain!r}", str(PNEUMONIA), "'source_a'", "'source_b'", "'target'")


@needs_data
@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.01, float("nan"), True, "0.1"])
def test_bad_labelled_fraction(fraction: float) -> None:
    with pytest.raises(ValueError) as exc_info:
        shifted_medmnist_datalist(PNEUMONIA, "test", "target", labelled_fraction=fraction)
    _assert_one_line(exc_info, "labelled_fraction", "(0, 1]", repr(fraction), str(PNEUMONIA))


@needs_data
def test_unknown_role_and_split() -> None:
    with pytest.raises(ValueError) as exc_info:
        shifted_medmnist_datalist(PNEUMONIA, "test", "target", role="source")
    _assert_one_line(exc_info, "Unknown role 'source'", str(PNEUMONIA), "'labelled'", "'unlabelled'", "'all'")
    with pytest.raises(ValueError) as exc_info:
        shifted_medmnist_datalist(PNEUMONIA, "dev", "target")
    _assert_one_line(exc_info, "Unknown split 'dev'", str(PNEUMONIA))


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as exc_info:
        shifted_medmnist_datalist(missing, "train", "source_a")
    _assert_one_line(exc_info, str(missing), "does not exist")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"downsample": 0.0}, "downsample"),
        ({"downsample": 1.5}, "downsample"),
        ({"blur_sigma": -1.0}, "blur_sigma"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"window": (0.8, 0.2)}, "window"),
        ({"window": (0.0, 1.2)}, "window"),
        ({"noise_std": -0.1}, "noise_std"),
    ],
)
def test_bad_shift_parameters(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        AcquisitionShift("bad", **kwargs)
    _assert_one_line(exc_info, "AcquisitionShift 'bad'", fragment)


def test_bad_shift_input() -> None:
    with pytest.raises(ValueError) as exc_info:
        DOMAINS["target"](np.zeros((2, 1, 28, 28), np.float32), [0])
    _assert_one_line(exc_info, "AcquisitionShift 'target'", "(2, 1, 28, 28)", "1 indices")
    with pytest.raises(ValueError) as exc_info:
        DOMAINS["target"](np.zeros((28, 28), np.float32), 0)
    _assert_one_line(exc_info, "(28, 28)")


ADRENAL = DATA_ROOT / "adrenalmnist3d"


@pytest.mark.skipif(not ADRENAL.is_dir(), reason=f"shared AdrenalMNIST3D data missing: {ADRENAL}")
def test_3d_volumes_get_the_shift_on_every_axial_slice() -> None:
    raw = medmnist_datalist(ADRENAL, "val", filename="adrenalmnist3d.npz")
    items = shifted_medmnist_datalist(ADRENAL, "val", "target", filename="adrenalmnist3d.npz")
    assert items and items[0]["image"].shape == (1, 28, 28, 28) and items[0]["image"].dtype == np.float32
    item = items[0]
    volume = raw[item["index"]]["image"]
    slices = DOMAINS["target"](volume.reshape(1, 28, 28, 28), [item["index"]], 0).reshape(volume.shape)
    np.testing.assert_array_equal(item["image"], slices)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert not np.array_equal(item["image"], volume)
