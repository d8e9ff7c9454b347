"""Processes sharing one evidence run: a run folder is held by one live process at a time (``claim``), stale claims are
taken over, and nobody waits on a process that has ended."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from monai_kd.evidence import Claimed, claim, claim_holder
from monai_kd.evidence.stages import EMPTY_CLAIM_SECONDS


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_live_holder_keeps_the_run_and_release_frees_it(tmp_path):
    root = tmp_path / "run"
    with claim(root):
        assert claim_holder(root) == os.getpid()
        assert (tmp_path / "run.claim").read_text() == str(os.getpid())
        with pytest.raises(RuntimeError, match="claimed twice"):
            with claim(root):
                pass
    assert claim_holder(root) is None and not (tmp_path / "run.claim").exists()
    other = _sleeper()
    try:
        time.sleep(0.2)
        (tmp_path / "run.claim").write_text(str(other.pid))  # written after the other process started: it holds
        assert claim_holder(root) == other.pid
        with pytest.raises(Claimed, match=f"process {other.pid}"):
            with claim(root):
                pass
    finally:
        other.kill()
        other.wait()
    with claim(root):  # its process ended: the claim is stale and taken over
        assert claim_holder(root) == os.getpid()


def test_a_reused_process_id_does_not_hold_an_old_claim(tmp_path):
    """After a reboot the id in an old claim may belong to a new process: a claim older than its process is stale."""
    other = _sleeper()
    try:
        path = tmp_path / "run.claim"
        path.write_text(str(other.pid))
        hour_ago = time.time() - 3600
        os.utime(path, (hour_ago, hour_ago))
        assert claim_holder(tmp_path / "run") is None
    finally:
        other.kill()
        other.wait()


def test_an_empty_claim_is_being_written_unless_it_is_old(tmp_path):
    path = tmp_path / "run.claim"
    path.write_text("")
    with pytest.raises(Claimed, match="starting"):
        with claim(tmp_path / "run"):
            pass
    old = time.time() - 2 * EMPTY_CLAIM_SECONDS
    os.utime(path, (old, old))
    with claim(tmp_path / "run"):
        assert claim_holder(tmp_path / "run") == os.getpid()


def _hammer(folder: str, n: int, start: float, clashes) -> None:
    while time.time() < start:  # both processes begin together
        pass
    for i in range(n):
        root = os.path.join(folder, f"run{i}")
        try:
            with claim(root):
                try:  # holding the run: nobody else may be inside at the same time
                    fd = os.open(root + ".inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    with clashes.get_lock():
                        clashes.value += 1
                    continue
                os.close(fd)
                time.sleep(0.001)
                os.unlink(root + ".inside")
        except Claimed:
            pass


def test_two_processes_never_hold_one_run_together(tmp_path):
    """Two processes claim the same 150 runs in lockstep: never both inside one run (the old two-step claim let 4 of
    300 through)."""
    context = multiprocessing.get_context("fork")
    clashes = context.Value("i", 0)
    start = time.time() + 0.5
    workers = [context.Process(target=_hammer, args=(str(tmp_path), 150, start, clashes)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert clashes.value == 0
    assert not list(tmp_path.glob("*.claim")) and not list(tmp_path.glob("*.claim.*"))  # all released, no leftovers


def test_share_runs_leaves_or_waits_for_what_another_process_holds(tmp_path):
    from monai_kd.evidence import share_runs

    ran, refreshed = [], []
    other = _sleeper()
    try:
        time.sleep(0.2)
        (tmp_path / "b.claim").write_text(str(other.pid))
        jobs = [(tmp_path / name, (lambda name=name: ran.append(name) or name.upper())) for name in ("a", "b", "c")]
        assert share_runs(jobs, wait=False, refresh=lambda: refreshed.append(1)) == {tmp_path / "a": "A",
                                                                                     tmp_path / "c": "C"}
        assert ran == ["a", "c"] and len(refreshed) == 2  # the held run is left to its holder
        # waiting: retried until free, unless what is waited for shows up first (``until``)
        assert share_runs(jobs[1:2], wait=True, until=lambda: True, poll=0.01) == {}
        other.kill()
        other.wait()
        assert share_runs(jobs[1:2], wait=True, poll=0.01) == {tmp_path / "b": "B"}  # its holder ended: run here
    finally:
        other.kill()
        other.wait()
