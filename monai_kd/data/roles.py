"""Seeded, disjoint roles of one datalist split (e.g. MMKD's quiz set held out of the training split)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ROLES", "held_out_role"]

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
