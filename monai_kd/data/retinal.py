# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""The cross-device retinal vessel benchmark (STARE, VEVIO -> AV-WIDE) as a cross-domain segmentation datalist.

``../shared/data/retinal-vessels`` holds three real domains (see its SOURCE.txt): STARE (TopCon fundus camera,
20 adults), VEVIO (video indirect ophthalmoscopy, 16 newborns) and AV-WIDE (Optos ultra-widefield, 30 adults), one
image per person, every vessel mask manual. No person is in two domains. The sources are used whole; the target
AV-WIDE is split **by person** into 4 labelled / 12 unlabelled / 4 validation / 10 test images: the split proposed
in ``splits.json`` (``split_seed=None``) or a seeded re-draw of the 30 people with the same sizes.

:func:`retinal_datalist` builds the benchmark as a cross-domain datalist in the layout read by
:func:`monai_kd.data.domain_datalist.domain_datalist` (the same role names as for classification, mask files as
labels), and :func:`write_retinal_datalist` writes it as JSON (paths relative to the file), so another target domain
or source set is just another datalist file::

    {
        "source": [{"image": ".../im0001.ppm", "label": ".../im0001.ah.pgm", "subject": "STARE/im0001",
                    "domain": "STARE"}, ...],                      # STARE + VEVIO
        "STARE": [...], "VEVIO": [...],                            # each source alone
        "target_labelled":   [{"image": ..., "label": ..., "subject": "AV-WIDE/wide_image_04", "domain": "AV-WIDE"}],
        "target_unlabelled": [{"image": ..., "subject": ..., "domain": "AV-WIDE"}],   # no label path
        "validation": [...], "test": [...]
    }

VEVIO items also carry the device's field-of-view mask under ``fov``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["RETINAL_SPLIT_SIZES", "TARGET_DOMAIN", "SOURCE_DOMAINS", "retinal_datalist", "write_retinal_datalist"]

SOURCE_DOMAINS = ("STARE", "VEVIO")
TARGET_DOMAIN = "AV-WIDE"
#: target split sizes (people) of ``splits.json``
RETINAL_SPLIT_SIZES = {"target_labelled": 4, "target_unlabelled": 12, "validation": 4, "test": 10}
_SPLIT_KEYS = {"target_labelled": "labelled", "target_unlabelled": "unlabelled", "validation": "validation", "test": "test"}


def _source_items(root: Path, domain: str) -> list[dict]:
    """Every labelled image of one source domain, with its subject, domain and (VEVIO) field of view."""
    items = []
    if domain == "STARE":
        for image in sorted((root / "STARE" / "stare-images").glob("*.ppm")):
            label = root / "STARE" / "labels-ah" / f"{image.stem}.ah.pgm"
            items.append({"image": str(image), "label": str(label), "subject": f"STARE/{image.stem}", "domain": domain})
    elif domain == "VEVIO":
        for image in sorted((root / "VEVIO" / "frames").glob("*.png")):
            label = root / "VEVIO" / "frames_manual_01_bw" / f"bw_{image.stem}_black.png"
            fov = root / "VEVIO" / "frames_masks" / f"mask_{image.stem}.png"
            person = image.stem.split("od")[0].split("os")[0]  # neo02od1_d -> neo02
            items.append(
                {"image": str(image), "label": str(label), "fov": str(fov), "subject": f"VEVIO/{person}", "domain": domain}
            )
    else:
        raise ValueError(f"unknown source domain {domain!r}; expected one of {SOURCE_DOMAINS}.")
    for item in items:
        for key in ("image", "label", "fov"):
            if key in item and not os.path.isfile(item[key]):
                raise FileNotFoundError(f"retinal benchmark: {key} file missing: {item[key]}")
    if not items:
        raise FileNotFoundError(f"retinal benchmark: no {domain} images under {root}.")
    return items


def _target_item(root: Path, name: str, labelled: bool) -> dict:
    stem = Path(name).stem
    image = root / TARGET_DOMAIN / "images" / name
    item = {"image": str(image), "subject": f"{TARGET_DOMAIN}/{stem}", "domain": TARGET_DOMAIN}
    if labelled:
        item["label"] = str(root / TARGET_DOMAIN / "manual" / f"{stem}_vessels.png")
    for key in ("image", "label"):
        if key in item and not os.path.isfile(item[key]):
            raise FileNotFoundError(f"retinal benchmark: {key} file missing: {item[key]}")
    return item


def retinal_target_split(dataset_dir: str | os.PathLike, split_seed: int | None = None) -> dict[str, list[str]]:
    """Target image names per role: ``splits.json``'s split (``split_seed=None``) or a seeded re-draw by person.

    A re-draw shuffles the people of ``splits.json``'s split (one image per person) with
    ``numpy.random.default_rng(split_seed)`` and deals them out with the same sizes.
    """
    splits_file = Path(dataset_dir) / "splits.json"
    if not splits_file.is_file():
        raise FileNotFoundError(f"retinal benchmark: {splits_file} not found (is dataset_dir the retinal-vessels folder?)")
    proposal = json.loads(splits_file.read_text())["target_split"]
    split = {role: list(proposal[key]) for role, key in _SPLIT_KEYS.items()}
    if split_seed is None:
        return split
    people = sorted(name for names in split.values() for name in names)
    order = np.random.default_rng(split_seed).permutation(len(people))
    out, start = {}, 0
    for role in _SPLIT_KEYS:
        size = len(split[role])
        out[role] = sorted(people[i] for i in order[start : start + size])
        start += size
    return out


def retinal_datalist(
    dataset_dir: str | os.PathLike, split_seed: int | None = None, all_target_labels: bool = False
) -> dict[str, list[dict]]:
    """The retinal benchmark as a cross-domain segmentation datalist (absolute paths; see the module docstring).

    Args:
        dataset_dir: the ``retinal-vessels`` folder.
        split_seed: ``None`` for the target split of ``splits.json``; an integer re-draws the target people with
            the same role sizes (4 / 12 / 4 / 10).
        all_target_labels: the upper reference: ``target_labelled`` holds all 16 target training people with their
            masks (the 4 labelled and the 12 otherwise unlabelled ones); validation and test are unchanged.

    Returns:
        ``{"source", "STARE", "VEVIO", "target_labelled", "target_unlabelled", "validation", "test"}`` lists of
        items with ``image``, ``label`` (mask path; absent on unlabelled target items), ``subject`` and ``domain``.
    """
    root = Path(dataset_dir)
    sources = {domain: _source_items(root, domain) for domain in SOURCE_DOMAINS}
    split = retinal_target_split(root, split_seed)
    out: dict[str, list[dict]] = {"source": [i for d in SOURCE_DOMAINS for i in sources[d]], **sources}
    for role, names in split.items():
        out[role] = [_target_item(root, name, labelled=role != "target_unlabelled") for name in names]
    if all_target_labels:
        out["target_labelled"] += [_target_item(root, Path(i["image"]).name, True) for i in out["target_unlabelled"]]
    return out


def write_retinal_datalist(
    dataset_dir: str | os.PathLike, path: str | os.PathLike, split_seed: int | None = None, all_target_labels: bool = False
) -> str:
    """Write :func:`retinal_datalist` as a JSON file with paths relative to its folder; return the path.

    The file is rewritten only when its content changes, so several runs may share it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = retinal_datalist(dataset_dir, split_seed, all_target_labels)
    relative = {
        role: [
            {k: os.path.relpath(v, path.parent) if k in ("image", "label", "fov") else v for k, v in item.items()}
            for item in items
        ]
        for role, items in content.items()
    }
    text = json.dumps({"split_seed": split_seed, **relative}, indent=1)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


def subjects(items: Sequence[dict]) -> set[str]:
    """The people (``subject`` fields) of datalist items."""
    return {str(item["subject"]) for item in items}
