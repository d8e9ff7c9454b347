# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Train/validation/test splits of MONAI Decathlon-style datalist JSON files.

A datalist JSON follows the Medical Segmentation Decathlon layout read by
:func:`monai.data.load_decathlon_datalist`::

    {
        "training": [{"image": "imagesTr/case_0.nii.gz", "label": "labelsTr/case_0.nii.gz"}, ...],
        "validation": [...],  # optional
        "test": [...]  # optional, dicts or plain image paths
    }

Images may be NIfTI files or DICOM series folders; relative paths are resolved against
``base_dir`` (by default the folder of the JSON file).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from monai.data import load_decathlon_datalist, partition_dataset

__all__ = ["datalist_split"]

_SPLITS = ("train", "val", "test")
_SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# JSON keys that, when present, provide a split explicitly instead of partitioning ``key``
_EXPLICIT_KEYS: dict[str, str] = {"val": "validation", "test": "test"}
_PATH_FIELDS = ("image", "label")


def _check_ratios(ratios: Sequence[float], path: Path) -> tuple[float, float, float]:
    """Validate the (train, val, test) partition ratios.

    Args:
        ratios: three non-negative numbers with a positive sum.
        path: datalist path, only used in the error message.

    Returns:
        The ratios as a tuple of floats.

    Raises:
        ValueError: When ``ratios`` is not three finite non-negative numbers with a positive sum.
    """
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise ValueError(
            f"ratios must be three non-negative numbers (train, val, test) with a positive sum, "
            f"got {ratios!r} for datalist {path}."
        )
    return values  # type: ignore[return-value]


def _read_json(path: Path) -> dict:
    """Read the top-level JSON object of a datalist file.

    Args:
        path: path of an existing file.

    Returns:
        The parsed JSON object.

    Raises:
        ValueError: When the file is not valid JSON or its top level is not an object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Invalid JSON in datalist file {path}: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"Invalid JSON in datalist file {path}: not UTF-8 text ({exc.reason}).") from exc
    if not isinstance(content, dict):
        raise ValueError(f"Datalist file {path} must hold a JSON object at top level, got {type(content).__name__}.")
    return content


def _check_list(content: dict, list_key: str, path: Path) -> int:
    """Check that ``content[list_key]`` is a non-empty list.

    Args:
        content: parsed datalist JSON.
        list_key: key of the list to check.
        path: datalist path, only used in the error message.

    Returns:
        The length of the list.

    Raises:
        ValueError: When the key is missing, or its value is not a list or is empty.
    """
    if list_key not in content:
        raise ValueError(f"Datalist file {path} has no key {list_key!r}; keys present: {sorted(content)}.")
    items = content[list_key]
    if not isinstance(items, list):
        raise ValueError(f"Datalist file {path}: {list_key!r} must be a list, got {type(items).__name__}.")
    if not items:
        raise ValueError(f"Datalist file {path}: the {list_key!r} list is empty.")
    return len(items)


def _load(path: Path, list_key: str, base_dir: Path) -> list[dict]:
    """Load one list of the datalist with :func:`monai.data.load_decathlon_datalist`.

    Args:
        path: datalist path.
        list_key: key of the list to load.
        base_dir: folder that relative paths are resolved against.

    Returns:
        The items with ``image`` (and ``label`` path) entries joined with ``base_dir``.

    Raises:
        ValueError: When an item is not a dictionary (plain paths are only allowed under ``"test"``).
    """
    try:
        return load_decathlon_datalist(path, is_segmentation=True, data_list_key=list_key, base_dir=base_dir)
    except TypeError as exc:
        raise ValueError(f"Datalist file {path}: invalid item in {list_key!r}: {exc}") from exc


def _check_paths(items: list[dict], path: Path, list_key: str) -> None:
    """Check that every image (and label path) referenced by ``items`` exists.

    Args:
        items: datalist items returned by :func:`monai.data.load_decathlon_datalist`.
        path: datalist path, only used in the error message.
        list_key: key the items come from, only used in the error message.

    Raises:
        ValueError: When an item has no ``image`` entry or it is not a path or list of paths.
        FileNotFoundError: When a referenced image or label path (file or DICOM folder) does not exist.
    """
    for i, item in enumerate(items):
        if "image" not in item:
            raise ValueError(f"Datalist file {path}: item {i} of {list_key!r} has no 'image' entry: {item}.")
        for field in _PATH_FIELDS:
            value = item.get(field)
            if isinstance(value, (str, os.PathLike)):
                candidates = [value]
            elif isinstance(value, list) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
                candidates = value
            elif field == "image":
                raise ValueError(
                    f"Datalist file {path}: item {i} of {list_key!r} has an 'image' that is not a path: {value!r}."
                )
            else:  # e.g. an integer class label
                continue
            for candidate in candidates:
                if not os.path.exists(candidate):
                    raise FileNotFoundError(
                        f"{field.capitalize()} path referenced by item {i} of {list_key!r} in datalist {path} "
                        f"does not exist: {candidate}"
                    )


def _subject(item: dict, subject_key: str | None) -> str | None:
    """The subject (person) of an item: its ``subject_key`` field (``"subject"``, falling back to ``"patient"``)."""
    if subject_key is None:
        return None
    for key in (subject_key, "patient") if subject_key == "subject" else (subject_key,):
        if key in item:
            return str(item[key])
    return None


def _partition_by_subject(
    items: list[dict], ratios: list[float], seed: int, subject_key: str | None, path: Path, list_key: str
) -> list[list[dict]]:
    """Partition items so that all items of one subject land in the same part (seeded, like ``partition_dataset``).

    Args:
        items: the items to partition.
        ratios: the parts' proportions, applied to the number of subjects.
        seed: seed of the shuffle.
        subject_key: item field naming the subject; ``None`` declares every item a different subject.
        path: datalist path, for the error message.
        list_key: the list partitioned, for the error message.

    Raises:
        ValueError: ``subject_key`` is set and an item does not carry it.
    """
    if subject_key is None:
        return partition_dataset(items, ratios=ratios, shuffle=True, seed=seed)
    subjects = [_subject(item, subject_key) for item in items]
    missing = [i for i, s in enumerate(subjects) if s is None]
    if missing:
        also = " (or 'patient')" if subject_key == "subject" else ""
        raise ValueError(
            f"Datalist file {path}: item {missing[0]} of {list_key!r} (and {len(missing) - 1} more) has no "
            f"{subject_key!r}{also} field, so a random split could put one person in two splits; add a "
            f"{subject_key!r} field to every item, or pass subject_key=None if every item is a different person."
        )
    unique = sorted(set(subjects))  # sorted: the same subjects give the same partition whatever the item order
    parts = partition_dataset(unique, ratios=ratios, shuffle=True, seed=seed)
    part_of = {subject: i for i, part in enumerate(parts) for subject in part}
    first = next(i for i, r in enumerate(ratios) if r > 0)
    for subject in unique:  # partition_dataset rounds down and can leave subjects out (4 subjects, 0.8/0.1/0.1)
        part_of.setdefault(subject, first)
    out: list[list[dict]] = [[] for _ in parts]
    for item, subject in zip(items, subjects):
        out[part_of[subject]].append(item)
    return out


def _check_disjoint_subjects(splits: dict[str, list[dict]], subject_key: str | None, path: Path) -> None:
    """Raise if one subject has items in two splits (checked where items name their subject)."""
    seen: dict[str, str] = {}
    for split, items in splits.items():
        for subject in {_subject(item, subject_key) for item in items} - {None}:
            if subject in seen and seen[subject] != split:
                raise ValueError(
                    f"Datalist file {path}: subject {subject!r} has items in both the {seen[subject]!r} and the "
                    f"{split!r} split; a person's images must stay in one split."
                )
            seen.setdefault(subject, split)


def datalist_split(
    datalist_file: str | os.PathLike,
    split: str,
    base_dir: str | os.PathLike | None = None,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    key: str = "training",
    subject_key: str | None = "subject",
) -> list[dict]:
    """Return the train, validation or test items of a Decathlon-style datalist JSON, split by subject.

    Splits listed explicitly in the JSON are used as they are: ``"val"`` comes from a
    ``"validation"`` list and ``"test"`` from a ``"test"`` list. The list under ``key`` is
    partitioned among ``"train"`` and the splits that are not explicit, with the matching entries of
    ``ratios``, **by subject**: every item names its person in a ``subject`` field (``patient`` is accepted too,
    or the field named by ``subject_key``), subjects are shuffled (seeded) and partitioned with
    :func:`monai.data.partition_dataset`, and all items of a subject go to the subject's split, so slices, views
    or contrasts of one person never land in two splits. Items without the field are refused with an error
    asking for it, unless ``subject_key=None`` declares every item a different person. For example, a JSON with
    only ``"training"`` gives disjoint 80/10/10 train/val/test subjects; a JSON with ``"training"`` and
    ``"test"`` (the Decathlon layout) gives train/val from ``"training"`` in proportion 0.8:0.1 and test from
    ``"test"``; a JSON with all three lists returns each of them unchanged. Whatever the layout, a subject named
    in two splits (e.g. in ``"training"`` and in ``"test"``) is an error. The same arguments always give the
    same split.

    Example::

        from monai.data import Dataset
        from monai_kd.data import datalist_split

        train = datalist_split("dataset.json", "train", seed=0)
        val = datalist_split("dataset.json", "val", seed=0)
        ds = Dataset(train, transform=LoadImaged(keys=["image", "label"]))

    Args:
        datalist_file: path to the datalist JSON file.
        split: ``"train"``, ``"val"`` (alias ``"validation"``) or ``"test"``.
        base_dir: folder that relative image/label paths are resolved against; defaults to the
            folder of ``datalist_file``.
        ratios: (train, val, test) proportions of subjects used when partitioning the ``key`` list.
        seed: random seed of the partition.
        key: JSON key of the list that provides the training items.
        subject_key: item field naming the subject (person); ``None``: every item is a different person.

    Returns:
        A list of dictionaries with absolute ``image`` (and ``label``) paths; other entries
        (e.g. integer class labels, ``subject``) are kept unchanged.

    Raises:
        FileNotFoundError: When the datalist file, or an image or label path it references, does not exist.
        ValueError: When the file is not valid JSON, a needed key is missing or its list is empty,
            ``split`` or ``ratios`` is invalid, an item to partition names no subject, a subject is in two
            splits, or the requested split is empty after partitioning.
    """
    path = Path(datalist_file).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Datalist file does not exist: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"Datalist path is not a file: {path}")
    if not isinstance(split, str) or split not in _SPLIT_ALIASES:
        raise ValueError(
            f"Unknown split {split!r} for datalist {path}: expected one of 'train', 'val' (alias 'validation'), 'test'."
        )
    canonical = _SPLIT_ALIASES[split]
    split_ratios = dict(zip(_SPLITS, _check_ratios(ratios, path)))
    root = Path(base_dir).expanduser() if base_dir is not None else path.parent
    content = _read_json(path)

    explicit = {s: k for s, k in _EXPLICIT_KEYS.items() if k in content and k != key}
    splits: dict[str, list[dict]] = {}
    for s, list_key in explicit.items():
        _check_list(content, list_key, path)
        splits[s] = _load(path, list_key, root)
    total = _check_list(content, key, path)
    items = _load(path, key, root)
    partitioned = [s for s in _SPLITS if s not in explicit]
    used = [split_ratios[s] for s in partitioned]
    if sum(used) <= 0:
        raise ValueError(
            f"ratios {tuple(ratios)!r} give zero weight to every split partitioned from {key!r} "
            f"({partitioned}) in datalist {path}."
        )
    if sum(r > 0 for r in used) > 1:
        parts = _partition_by_subject(items, used, seed, subject_key, path, key)
    else:  # one split takes everything: nothing to partition
        parts = [items if r > 0 else [] for r in used]
    splits.update(zip(partitioned, parts))
    _check_disjoint_subjects(splits, subject_key, path)
    items = splits[canonical]
    list_key = explicit.get(canonical, key)
    if not items:
        raise ValueError(
            f"Split {split!r} of datalist {path} is empty: {total} items of {key!r} partitioned "
            f"among {partitioned} with ratios {[split_ratios[s] for s in partitioned]}."
        )
    _check_paths(items, path, list_key)
    return items
