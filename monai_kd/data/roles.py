"""Seeded, disjoint roles of one datalist split (e.g. MMKD's quiz set held out of the training split)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ROLES", "held_out_role", "quiz_role"]

ROLES = ("train", "quiz")


def held_out_role(
    items: Sequence[dict],
    role: str,
    fraction: float = 0.1,
    seed: int = 0,
    label_key: str | None = "label",
) -> list[dict]:
    """The ``"quiz"`` part (a seeded, class-stratified ``fraction``) of ``items``, or the ``"train"`` rest.

    The two roles are disjoint and together are ``items``; both keep the original order. The same ``items``,
    ``fraction`` and ``seed`` always give the same partition, so a bundle can build the training and quiz datalists
    in two expressions. Items are drawn per class of ``item[label_key]`` (at least one per class when a class has
    two or more items), or uniformly when ``label_key`` is ``None``. Split MedMNIST-style datasets that have one
    image per person this way; datasets with several images per person must be split by person first
    (:func:`monai_kd.data.datalist_split`).

    Args:
        items: the training split's items (dicts).
        role: ``"quiz"`` or ``"train"``.
        fraction: fraction of every class held out as quiz data, in (0, 1).
        seed: seed of the draw.
        label_key: key of the class label used for stratification, or ``None``.

    Raises:
        ValueError: unknown role, fraction outside (0, 1), or fewer than two items.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
    if len(items) < 2:
        raise ValueError(f"need at least two items to hold some out, got {len(items)}.")
    labels = np.array([int(np.asarray(it[label_key]).reshape(-1)[0]) for it in items]) if label_key else np.zeros(len(items))
    rng = np.random.default_rng(seed)
    quiz = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = int(round(fraction * len(members)))
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        quiz.append(rng.choice(members, size=count, replace=False))
    in_quiz = np.zeros(len(items), dtype=bool)
    in_quiz[np.concatenate(quiz).astype(int)] = True
    keep = in_quiz if role == "quiz" else ~in_quiz
    return [item for item, k in zip(items, keep) if k]


def _datalist_has(provider: Callable[[str], list[dict]], role: str) -> bool:
    """Whether ``provider`` reads a datalist JSON (a :class:`~monai_kd.data.DatalistProvider` with ``datalist``
    set) that lists ``role``."""
    path = getattr(provider, "datalist", None)
    if not path or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        try:
            return role in json.load(f)
        except (json.JSONDecodeError, TypeError):
            return False  # the provider itself reports the invalid JSON


def _identity(item: dict) -> str | None:
    """The file an item was read from (``path`` after loading, else ``image`` when it is a path)."""
    ident = item.get("path", item.get("image"))
    return os.fspath(ident) if isinstance(ident, (str, os.PathLike)) else None


def quiz_role(
    provider: Callable[[str], list[dict]],
    role: str,
    fraction: float = 0.1,
    seed: int = 0,
    hold_out: bool = True,
    items: Sequence[dict] | None = None,
    label_key: str | None = "label",
) -> list[dict]:
    """The ``"train"`` or ``"quiz"`` items of a bundle whose method holds a quiz split out of training (MMKD).

    - The user's datalist JSON lists ``quiz``: those items are the quiz, and ``training`` (its train split) is the
      training data; the two must not share an image file.
    - Otherwise the quiz is carved from the training split by :func:`held_out_role` (``fraction``, ``seed``), and
      ``train`` is the rest.
    - ``hold_out=False`` (a method without a quiz step): ``train`` is the whole training split.

    Args:
        provider: callable ``role -> items`` (a :class:`~monai_kd.data.DatalistProvider`).
        role: ``"train"`` or ``"quiz"``.
        fraction: fraction of every class held out as quiz data when the datalist has no quiz list.
        seed: seed of that draw.
        hold_out: whether the training items exclude the quiz.
        items: the training split's items when already read (``provider("train")`` otherwise).
        label_key: key of the class label used for stratification, or ``None``.

    Raises:
        ValueError: unknown role, or a quiz list that shares images with the training list (naming one).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
    train = list(items) if items is not None else provider("train")
    if role == "train" and not hold_out:
        return train
    if not _datalist_has(provider, "quiz"):
        return held_out_role(train, role, fraction=fraction, seed=seed, label_key=label_key)
    if role == "train":
        return train
    quiz = provider("quiz")
    shared = {_identity(i) for i in train} & {_identity(i) for i in quiz} - {None}
    if shared:
        raise ValueError(
            f"Datalist file {getattr(provider, 'datalist', '')}: the quiz list shares {len(shared)} image(s) with the "
            f"training data, e.g. {sorted(shared)[0]}; the quiz must be held out of training."
        )
    return quiz
