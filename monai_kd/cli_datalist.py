"""``monai-kd datalist``: write a Decathlon-style datalist JSON from a folder of images (and masks), and say what it found.

Examples::

    # segmentation: images and masks matched by name ({stem}: the image's file name without its extensions)
    monai-kd datalist AV-WIDE --images "images/*.png" --masks "manual/{stem}_vessels.png" --output av_wide.json

    # classification: the class of an image is the name of its folder (benign/, malignant/, ...)
    monai-kd datalist breast --images "*/*.png" --labels folder --output breast.json

    # one person per subject: the subject is the first group of a regular expression on the image path
    monai-kd datalist scans --images "**/*.nii.gz" --masks "{parent}/{stem}_seg.nii.gz" --subject "(patient\\d+)"

    # more roles in the same file (validation / test / unlabelled / quiz, or per-domain lists such as source)
    monai-kd datalist extra --images "*.png" --role unlabelled --output av_wide.json

This module imports neither torch nor MONAI, so the command answers at once.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter

__all__ = ["build_datalist", "datalist"]

#: roles whose items carry no label
UNLABELLED_ROLES = ("unlabelled", "target_unlabelled")
_DOUBLE_SUFFIXES = (".nii.gz", ".seg.nrrd")


def _stem(path: str) -> str:
    """File name without its extension(s): ``case_01.nii.gz`` -> ``case_01``."""
    name = os.path.basename(path.rstrip(os.sep))
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def _find(folder: str, pattern: str) -> list[str]:
    """Files (or DICOM series folders, for patterns ending in ``/``) matching ``pattern`` under ``folder``, sorted."""
    want_dirs = pattern.endswith("/")
    hits = glob.glob(os.path.join(folder, pattern), recursive=True)
    return sorted(h.rstrip(os.sep) for h in hits if (os.path.isdir(h) if want_dirs else os.path.isfile(h)))


def _mask_for(folder: str, image: str, masks: str, candidates: dict[str, list[str]] | None) -> str | None:
    """The mask of ``image``: ``masks`` as a template (``{stem}``, ``{name}``, ``{parent}``) or, for a glob, the
    mask whose stem is the image's stem or starts with it followed by ``_``, ``-`` or ``.``."""
    if candidates is None:
        rel_parent = os.path.relpath(os.path.dirname(image), folder)
        path = os.path.join(folder, masks.format(stem=_stem(image), name=os.path.basename(image), parent=rel_parent))
        return path if os.path.exists(path) else None
    stem = _stem(image)
    exact = candidates.get(stem)
    if exact:
        return exact[0]
    for mask_stem, paths in candidates.items():
        if mask_stem.startswith(stem) and mask_stem[len(stem)] in "_-.":
            return paths[0]
    return None


def build_datalist(
    folder: str,
    images: str,
    masks: str | None = None,
    labels: str | None = None,
    subject: str | None = None,
    role: str = "training",
    classes: list[str] | None = None,
) -> tuple[list[dict], dict]:
    """The datalist items of the images under ``folder`` (absolute paths) and a summary of what was found.

    Args:
        folder: the data folder.
        images: glob pattern of the images relative to ``folder`` (``**`` searches sub-folders; a pattern ending in
            ``/`` lists DICOM series folders).
        masks: mask of each image: a template relative to ``folder`` with ``{stem}`` (image file name without
            extensions), ``{name}`` (file name) and ``{parent}`` (the image's folder relative to ``folder``), or a
            glob pattern whose files are matched to images by name.
        labels: ``"folder"``: the class is the name of the image's folder; classes are numbered in sorted order.
        subject: regular expression searched in the image path relative to ``folder``; its first group (or the whole
            match) names the person. Default: the image's stem (every image a different person).
        role: the list the items go to (``training``, ``validation``, ``test``, ``unlabelled``, ``quiz``, or a
            per-domain list such as ``source`` / ``target_labelled`` / ``target_unlabelled``).
        classes: the class names in label order (e.g. from the roles already written); default: sorted folder names.

    Returns:
        ``(items, summary)``; ``summary`` has ``images``, ``subjects``, ``classes`` (name -> count) and ``masks``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no image matches, an image has no mask, the subject pattern does not match an image, or labels
            are asked for a role without labels.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"data folder does not exist: {folder}")
    found = _find(folder, images)
    if not found:
        raise ValueError(f"no image matches '{images}' under {folder}.")
    unlabelled = role in UNLABELLED_ROLES
    if unlabelled and (masks or labels):
        raise ValueError(f"role '{role}' holds unlabelled images: give neither --masks nor --labels.")
    if labels not in (None, "folder"):
        raise ValueError(f"--labels must be 'folder' (the class is the image's folder name), got {labels!r}.")
    candidates = None
    if masks and not any(key in masks for key in ("{stem}", "{name}", "{parent}")):
        candidates = {}
        for path in _find(folder, masks):
            candidates.setdefault(_stem(path), []).append(path)
        if not candidates:
            raise ValueError(f"no mask matches '{masks}' under {folder}.")
    mask_files = set()
    class_names: list[str] = []
    if labels == "folder":
        folders = sorted({os.path.basename(os.path.dirname(p)) for p in found})
        class_names = list(classes) if classes else folders
        unknown = [name for name in folders if name not in class_names]
        if unknown:
            raise ValueError(f"class folder(s) {unknown} are not among the datalist's classes {class_names}.")
    pattern = re.compile(subject) if subject else None
    items = []
    for path in found:
        if candidates is not None and path in {p for ps in candidates.values() for p in ps}:
            continue  # a glob of images that also matches the masks (e.g. "*.png" in a mixed folder)
        rel = os.path.relpath(path, folder)
        item: dict = {"image": os.path.abspath(path)}
        if masks:
            mask = _mask_for(folder, path, masks, candidates)
            if mask is None:
                raise ValueError(f"no mask for image {path} (masks '{masks}'); every image of a segmentation set needs one.")
            mask_files.add(mask)
            item["label"] = os.path.abspath(mask)
        elif labels == "folder":
            item["label"] = class_names.index(os.path.basename(os.path.dirname(path)))
        if pattern is not None:
            match = pattern.search(rel)
            if match is None:
                raise ValueError(f"subject pattern '{subject}' does not match image {rel}.")
            item["subject"] = match.group(1) if match.groups() else match.group(0)
        else:
            item["subject"] = _stem(path)
        items.append(item)
    counts = Counter(class_names[i["label"]] for i in items) if labels == "folder" else Counter()
    summary = {
        "images": len(items),
        "subjects": len({i["subject"] for i in items}),
        "masks": len(mask_files),
        "classes": {name: counts[name] for name in class_names} if labels == "folder" else {},
    }
    return items, summary


def datalist(
    folder: str,
    images: str,
    output: str = "datalist.json",
    masks: str | None = None,
    labels: str | None = None,
    subject: str | None = None,
    role: str = "training",
) -> None:
    """Write (or add a role to) a Decathlon-style datalist JSON with paths relative to it, and print what was found.

    Args:
        folder: the data folder.
        images: glob pattern of the images relative to ``folder``, e.g. ``"images/*.png"``, ``"*/*.jpg"``.
        output: the JSON file; when it exists, ``role`` is written into it and its other lists are kept.
        masks: masks of a segmentation set, e.g. ``"manual/{stem}_vessels.png"`` or a glob matched by name.
        labels: ``folder``: classification labels from the sub-folder names.
        subject: regular expression naming the person in an image path (first group); default: one person per image.
        role: ``training`` (default), ``validation``, ``test``, ``unlabelled``, ``quiz`` or a per-domain list name.
    """
    content: dict = {}
    if os.path.isfile(output):
        with open(output, encoding="utf-8") as f:
            content = json.load(f)
        if not isinstance(content, dict):
            raise ValueError(f"{output} exists and is not a datalist (a JSON object).")
    items, summary = build_datalist(folder, images, masks, labels, subject, role, content.get("classes"))
    base = os.path.dirname(os.path.abspath(output))
    for item in items:
        for key in ("image", "label"):
            if isinstance(item.get(key), str):
                item[key] = os.path.relpath(item[key], base)
    content[role] = items
    if summary["classes"]:
        content.setdefault("classes", list(summary["classes"]))
    os.makedirs(base, exist_ok=True)
    tmp = f"{output}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, output)
    what = f"{summary['images']} images of {summary['subjects']} subjects"
    if summary["masks"]:
        what += f", {summary['masks']} masks"
    if summary["classes"]:
        what += ", classes " + ", ".join(f"{i}={name} ({n})" for i, (name, n) in enumerate(summary["classes"].items()))
    print(f"{output}: '{role}': {what}")
