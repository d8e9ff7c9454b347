# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Resumable training stages of an evidence run: one run folder per stage, skipped once it finished.

A stage is finished when its *done file* exists: by default a ``done.json`` marker the runner writes into the run
folder after the stage returned (with its seconds), or a file the stage writes itself (e.g. its final checkpoint).
A run folder without its marker is the remains of an interrupted run: its checkpoints may be partial (MONAI's
``CheckpointSaver`` saves on exceptions), so it is removed before the stage runs again.

Several processes (one per CPU core) may share one evidence run: each holds a run folder with :func:`claim` while it
trains it, and the others skip that run (:class:`Claimed`) or wait for it (:func:`wait_for`). A claim whose process
has died (a crash, a killed job, a reboot) is stale and taken over, so nothing stays blocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

__all__ = ["MARKER", "Claimed", "StageRun", "claim", "claim_holder", "run_bundle", "run_stage", "share_runs", "wait_for"]

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


def _started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started after the time ``when`` (its id was reused since); False when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") > when + 1.0  # field 22: start time in ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return False


#: a claim file still empty for this long was left by a process that died while creating it
EMPTY_CLAIM_SECONDS = 10.0


def claim_holder(root: str | os.PathLike) -> int | None:
    """The process id holding ``root``'s claim, or None when nobody (alive) holds it.

    A claim is stale when its process has ended, or when its process id now belongs to a process started after the
    claim was written (ids are reused, e.g. after a reboot).
    """
    path = _claim_file(root)
    try:
        text, written = path.read_text().strip(), path.stat().st_mtime
    except FileNotFoundError:
        return None
    if not text:  # being written by a process that creates it in two steps
        return -1 if time.time() - written < EMPTY_CLAIM_SECONDS else None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 and _alive(pid) and not _started_after(pid, written) else None


@contextlib.contextmanager
def claim(root: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder ``root`` for this process while the ``with`` block trains it.

    The claim is a ``<root>.claim`` file holding this process's id, removed on exit (also on an exception). It is
    taken under an exclusive lock of the folder's ``.claims.lock`` and appears with its content at once (a hard link
    of a written file), so two processes never both hold a run; a stale claim (see :func:`claim_holder`) is taken
    over.

    Args:
        root: the run folder.

    Raises:
        Claimed: another live process holds ``root``.
    """
    path = _claim_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".claims.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        holder = claim_holder(root)
        if holder == os.getpid():
            raise RuntimeError(f"{root} is claimed twice by this process")
        if holder is not None:
            raise Claimed(f"{root} is being run by process {holder if holder > 0 else '(starting)'}")
        if path.exists():
            logger.info("%s: taking over the claim of a process that has ended", root)
            path.unlink()
        mine = path.with_name(f"{path.name}.{os.getpid()}")
        mine.write_text(str(os.getpid()))
        try:
            os.link(mine, path)  # fails if a process without the lock created it meanwhile
        except FileExistsError:
            raise Claimed(f"{root} was claimed by another process meanwhile") from None
        finally:
            mine.unlink()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if claim_holder(root) in (os.getpid(), None):
                path.unlink()


def share_runs(
    jobs: list[tuple[Path, Callable[[], Any]]],
    wait: bool,
    refresh: Callable[[], None] = lambda: None,
    until: Callable[[], bool] | None = None,
    poll: float = 30.0,
) -> dict[Hashable, Any]:
    """Run each ``(run folder, job)`` under the folder's :func:`claim`, so that processes sharing an evidence run
    (one per CPU core) split the work.

    A job another live process holds is skipped (``wait`` False: that process records it) or retried every ``poll``
    seconds until it is free (``wait`` True: the job then finds the holder's checkpoint or record, or trains the run
    itself when the holder died before finishing it). ``refresh`` (e.g. :meth:`RecordStore.refresh`) runs before each
    job, which checks the records itself.

    Args:
        jobs: ``(run folder, job)`` pairs.
        wait: wait for the jobs other processes hold (True) or leave them to them (False).
        refresh: merges in what the other processes recorded.
        until: stop waiting as soon as this is true (checked after ``refresh``).
        poll: seconds between retries.

    Returns:
        what each job that ran here returned, by run folder.
    """
    out: dict[Hashable, Any] = {}
    pending = list(jobs)
    while pending:
        for job in list(pending):
            root, run = job
            try:
                with claim(root):
                    refresh()
                    out[root] = run()
            except Claimed as e:
                if wait:
                    continue
                logger.info("skip (another process records it): %s", e)
            pending.remove(job)
        if pending:
            refresh()
            if until is not None and until():
                break
            time.sleep(poll)
    return out


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
