# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Resumable training stages of an evidence run: one run folder per stage, skipped once it finished.

A stage is finished when its *done file* exists: by default a ``done.json`` marker the runner writes into the run
folder after the stage returned (with its seconds), or a file the stage writes itself (e.g. its final checkpoint).
A run folder without its marker is the remains of an interrupted run: its checkpoints may be partial (MONAI's
``CheckpointSaver`` saves on exceptions), so it is removed before the stage runs again.

Several processes (one per CPU core) may share one evidence run: each holds a run folder with :func:`claim` while it
trains it, and the others skip that run (:class:`Claimed`) or wait for it (:func:`wait_for`). A claim whose process
has died (a crash, a killed job) is stale and taken over, so nothing stays blocked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "Claimed", "StageRun", "claim", "claim_holder", "run_bundle", "run_stage", "wait_for"]

MARKER = "done.json"

logger = logging.getLogger(__name__)


class Claimed(RuntimeError):
    """The run is being trained by another live process (which will record it)."""


def _claim_file(root: str | os.PathLike) -> Path:
    root = Path(root)
    return root.with_name(root.name + ".claim")  # beside the folder: run_stage may remove an interrupted folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def claim_holder(root: str | os.PathLike) -> int | None:
    """The process id holding ``root``'s claim, or None when nobody (alive) holds it."""
    try:
        pid = int(_claim_file(root).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) else None


@contextlib.contextmanager
def claim(root: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder ``root`` for this process while the ``with`` block trains it.

    The claim is a ``<root>.claim`` file created exclusively with this process's id, removed on exit (also on an
    exception). A claim of a dead process is taken over.

    Args:
        root: the run folder.

    Raises:
        Claimed: another live process holds ``root``.
    """
    path = _claim_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = claim_holder(root)
            if holder == os.getpid():
                raise RuntimeError(f"{root} is claimed twice by this process") from None
            if holder is not None:
                raise Claimed(f"{root} is being run by process {holder}") from None
            logger.info("%s: taking over the claim of a process that has ended", root)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise Claimed(f"{root}: could not claim it (other processes keep taking it)")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if claim_holder(root) in (os.getpid(), None):
                path.unlink()


def wait_for(root: str | os.PathLike, done: Callable[[], bool], poll: float = 30.0, name: str | None = None) -> bool:
    """Wait while another live process holds ``root`` and ``done()`` is false.

    Args:
        root: the run folder another process may hold.
        done: whether what is waited for exists (e.g. the checkpoint, or the record).
        poll: seconds between checks.
        name: the run's name in the log.

    Returns:
        ``done()`` once nobody holds the claim (False: the holder died or stopped without finishing; run it yourself).
    """
    announced = False
    while not done() and claim_holder(root) is not None:
        if not announced:
            logger.info("waiting for %s (process %s)", name or root, claim_holder(root))
            announced = True
        time.sleep(poll)
    return done()


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
