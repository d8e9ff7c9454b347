# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Routing rules of a node: which bundle runs on which series.

A rules file is JSON::

    {"routes": [
        {"name": "ct-organs", "bundle": "/opt/bundles/ct_seg", "modality": "CT"},
        {"name": "brain-mr", "bundle": "/opt/bundles/kdml_seg", "ckpt_file": "/opt/weights/kdml_seg.pt",
         "modality": "MR", "description": "flair"}
    ]}

A route matches a series when every selector it has matches: ``modality`` (exact, case-insensitive; a list means
any of them) and ``description`` (a regular expression searched case-insensitively in *Series Description*).
The first matching route wins; a series no route matches is quarantined with the reason. Relative paths are
relative to the rules file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Route", "RoutingError", "load_routes", "match_route"]


class RoutingError(ValueError):
    """Invalid routing rules."""


@dataclass(frozen=True)
class Route:
    """One routing rule.

    Attributes:
        name: shown in logs and records.
        bundle: bundle folder.
        ckpt_file: weights (default: the bundle's ``models/model.pt``).
        modality: accepted modalities (empty: any).
        description: regular expression searched in *Series Description* (``None``: any).
        force: run this route's bundle on series outside its input contract (metadata ``input_contract``); the
            outputs record the override. Default: such series are quarantined with the reason.
        overlay: a config file layered over the bundle's ``inference.json`` (e.g. kdml_seg's
            ``configs/inference_2d.json`` for photographs).
    """

    name: str
    bundle: str
    ckpt_file: str | None = None
    modality: tuple[str, ...] = ()
    description: str | None = None
    force: bool = False
    overlay: str | None = None

    def matches(self, modality: str, description: str) -> bool:
        """Whether a series with this *Modality* and *Series Description* goes to this route."""
        if self.modality and modality.strip().upper() not in self.modality:
            return False
        return self.description is None or re.search(self.description, description or "", re.IGNORECASE) is not None

    def __str__(self) -> str:
        selectors = [f"modality in {list(self.modality)}"] if self.modality else []
        if self.description is not None:
            selectors.append(f"description ~ /{self.description}/i")
        return f"{self.name} ({' and '.join(selectors) or 'any series'} -> {self.bundle})"


def _route(entry: dict, base: Path, index: int) -> Route:
    if not isinstance(entry, dict) or not entry.get("bundle"):
        raise RoutingError(f"route #{index + 1} needs a 'bundle': {entry!r}")
    unknown = set(entry) - {"name", "bundle", "ckpt_file", "modality", "description", "force", "overlay"}
    if unknown:
        raise RoutingError(f"route #{index + 1}: unknown key(s) {sorted(unknown)}")
    modality = entry.get("modality") or ()
    modality = (modality,) if isinstance(modality, str) else tuple(modality)
    description = entry.get("description")
    if description is not None:
        try:
            re.compile(description)
        except re.error as e:
            raise RoutingError(f"route #{index + 1}: invalid description pattern {description!r}: {e}") from e

    def resolve(path: str | None) -> str | None:
        return None if path is None else str((base / os.path.expanduser(path)).resolve())

    bundle = resolve(entry["bundle"])
    if not os.path.isfile(os.path.join(bundle, "configs", "metadata.json")):  # type: ignore[arg-type]
        raise RoutingError(f"route #{index + 1}: '{bundle}' is not a bundle (no configs/metadata.json)")
    return Route(
        name=str(entry.get("name") or f"route{index + 1}"),
        bundle=bundle,  # type: ignore[arg-type]
        ckpt_file=resolve(entry.get("ckpt_file")),
        modality=tuple(m.strip().upper() for m in modality),
        description=description,
        force=bool(entry.get("force", False)),
        overlay=resolve(entry.get("overlay")),
    )


def load_routes(source: str | os.PathLike | list[dict], base: str | os.PathLike | None = None) -> list[Route]:
    """Routing rules from a JSON file (``{"routes": [...]}``) or a list of route dictionaries.

    Args:
        source: the rules file, or the list of routes.
        base: folder relative paths refer to (default: the rules file's folder, else the current folder).

    Returns:
        The routes, in order.

    Raises:
        RoutingError: When the rules are invalid or a bundle does not exist.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source) as f:
            try:
                entries = json.load(f).get("routes")
            except (json.JSONDecodeError, AttributeError) as e:
                raise RoutingError(f"'{source}' is not a JSON object with a 'routes' list: {e}") from e
        base = base or Path(source).resolve().parent
    else:
        entries = source
    if not isinstance(entries, list) or not entries:
        raise RoutingError("routing rules need a non-empty 'routes' list.")
    folder = Path(base or os.getcwd())
    return [_route(entry, folder, i) for i, entry in enumerate(entries)]


def match_route(routes: list[Route], modality: str, description: str) -> Route | None:
    """The first route matching a series, or ``None``."""
    return next((route for route in routes if route.matches(modality, description)), None)
