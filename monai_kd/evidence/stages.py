# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Resumable training stages of an evidence run: one run folder per stage, skipped once it finished.

A stage is finished when its *done file* exists: by default a ``done.json`` marker the runner writes into the run
folder after the stage returned (with its seconds), or a file the stage writes itself (e.g. its final checkpoint).
A run folder without its marker is the remains of an interrupted run: its checkpoints may be partial (MONAI's
``CheckpointSaver`` saves on exceptions), so it is removed before the stage runs again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "StageRun", "run_bundle", "run_stage"]

MARKER = "done.json"

logger = logging.getLogger(__name__)


@dataclass
class StageRun:
    """What :func:`run_stage` did: ``ran`` False when the stage had finished before (``seconds``/``value`` None)."""

    root: Path
    ran: bool
    seconds: float | None = None
    value: Any = None


def run_stage(
    root: str | os.PathLike,
    stage: Callable[[], Any],
    *,
    done: str | os.PathLike | None = None,
    clean: bool = True,
    name: str | None = None,
    info: dict[str, Any] | None = None,
) -> StageRun:
    """Run ``stage()`` for the run folder ``root`` unless it finished before.

    Args:
        root: the stage's run folder (its ``bundle_root``).
        stage: the training, called without arguments (e.g. ``functools.partial(run_bundle, ...)``).
        done: the file whose existence means the stage finished (e.g. its checkpoint); default ``root/done.json``,
            written by this function with ``info`` and the seconds once ``stage`` returned.
        clean: with the default marker, remove a run folder that has no marker before running (an interrupted run).
        name: the stage's name in the log (default the folder name).
        info: extra content of the marker (e.g. the run id and overrides).

    Returns:
        a :class:`StageRun`; ``value`` is what ``stage`` returned.
    """
    root = Path(root)
    name = name or root.name
    marker = Path(done) if done is not None else root / MARKER
    if marker.is_file():
        logger.info("skip %s (%s exists)", name, marker)
        return StageRun(root, False)
    if done is None and clean and root.exists():
        logger.info("%s: removing the interrupted run in %s", name, root)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    value = stage()
    seconds = time.perf_counter() - start
    if done is None:
        marker.write_text(json.dumps({**(info or {}), "seconds": seconds}, default=str))
    elif not marker.is_file():
        logger.warning("%s finished without writing %s: it will run again next time", name, marker)
    logger.info("%s: %.0f s", name, seconds)
    return StageRun(root, True, seconds, value)


def run_bundle(run_id: str, config_file: str | os.PathLike | list, bundle_root: str | os.PathLike, **override: Any) -> None:
    """``monai.bundle.run`` of ``run_id`` into ``bundle_root`` (what ``monai-kd train`` does), MONAI imported here.

    Args:
        run_id: the config's run id, e.g. ``run_teacher``.
        config_file: the config file(s) (later files override earlier ones).
        bundle_root: the run folder.
        override: other ``monai.bundle.run`` arguments and config overrides (``meta_file``, ``seed``, ...).
    """
    from monai.bundle import run

    files = [str(f) for f in config_file] if isinstance(config_file, (list, tuple)) else str(config_file)
    run(run_id, config_file=files, bundle_root=str(bundle_root), **override)
