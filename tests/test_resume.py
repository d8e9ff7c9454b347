"""Nothing lost on a crash: ``kill -9`` mid-epoch and mid-save, then the same command again (real BreastMNIST)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO

STAGE = "student_alone"  # the kd bundle's smallest stage: a 77k-parameter ResNet, SWA, cosine schedule, validation
EPOCHS = 3


def _command(root: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "monai_kd.cli", "train", str(REPO / "bundles" / "kd"), "--stage", STAGE,
        "--bundle_root", str(root), "--dataset_dir", str(data_dir / "breastmnist"), "--max_epochs", str(EPOCHS),
        "--batch_size", "64", "--device", "cpu", *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run to the end; ``stdout`` holds stdout and stderr together (the logs go to either)."""
    return subprocess.run(command, env={**_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _trained_epochs(log: str) -> list[int]:
    return [int(e) for e in re.findall(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete", log)]


@pytest.mark.slow
def test_kill9_mid_epoch_then_rerun_gives_the_uninterrupted_weights(tmp_path, data_dir):
    # the uninterrupted reference
    ref = tmp_path / "ref"
    done = _run(_command(ref, data_dir))
    assert done.returncode == 0, done.stdout[-2000:]
    assert _trained_epochs(done.stdout) == [1, 2, 3]

    # the same command, killed with SIGKILL in the middle of epoch 3 (after epoch 2's checkpoint is on disk)
    root = tmp_path / "killed"
    resume_file = root / "models" / "resume" / f"{STAGE}.pt"
    proc = subprocess.Popen(_command(root, data_dir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    saved_epoch = 0
    while saved_epoch < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if resume_file.is_file():
            saved_epoch = torch.load(resume_file, weights_only=True)["epoch"]  # never partial: written atomically
    time.sleep(1.0)  # into epoch 3
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / "models" / f"{STAGE}.pt").exists()  # a stage that did not finish leaves no final file
    killed_at = torch.load(resume_file, weights_only=True)
    assert killed_at["epoch"] == 2 and not killed_at["finished"]

    # the same command again: continues after epoch 2, redoes only the interrupted epoch
    again = _run(_command(root, data_dir))
    assert again.returncode == 0, again.stdout[-2000:]
    assert f"{STAGE}: resuming after epoch 2 of 3" in again.stdout
    assert _trained_epochs(again.stdout) == [3]  # no more than one epoch of work redone
    ours, theirs = _weights(root / "models" / f"{STAGE}.pt"), _weights(ref / "models" / f"{STAGE}.pt")
    assert ours.keys() == theirs.keys()
    for key in theirs:  # CPU, deterministic: identical, not just close
        assert torch.equal(ours[key], theirs[key]), key
    final_metric = re.findall(r"Epoch\[3\] Metrics -- val_acc: ([\d.]+) val_auc: ([\d.]+)", again.stdout)
    assert final_metric == re.findall(r"Epoch\[3\] Metrics -- val_acc: ([\d.]+) val_auc: ([\d.]+)", done.stdout)

    # a finished stage is skipped (its final file untouched) unless --resume false
    before = hashlib.sha256((root / "models" / f"{STAGE}.pt").read_bytes()).hexdigest()
    skipped = _run(_command(root, data_dir))
    assert skipped.returncode == 0 and f"{STAGE}: finished in" in skipped.stdout and _trained_epochs(skipped.stdout) == []
    assert hashlib.sha256((root / "models" / f"{STAGE}.pt").read_bytes()).hexdigest() == before


KILL_DURING_SAVE = """
import io, os, signal, sys
import torch
calls = {"n": 0}
original = torch.save
def save(obj, f, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == int(os.environ["KILL_AT_SAVE"]):
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        with open(f, "wb") as out:  # half the bytes reach the disk, then the process dies
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return original(obj, f, *args, **kwargs)
torch.save = save
from monai_kd.cli import main
sys.argv = ["monai-kd", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_kill9_during_the_final_checkpoint_save_leaves_no_partial_file(tmp_path, data_dir):
    root = tmp_path / "b"
    # saves: epoch 1 and epoch 2 training checkpoints, then the stage's final file (models/student_alone.pt)
    command = _command(root, data_dir)[3:]  # from "train" on
    command[command.index("--max_epochs") + 1] = "2"
    env = {**_env(), "KILL_AT_SAVE": "3"}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *command], env=env, capture_output=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL
    models = root / "models"
    assert not (models / f"{STAGE}.pt").exists()  # the partial bytes are under a temporary name only
    assert [p.name for p in models.glob(f".tmp-*-{STAGE}.pt")]
    state = torch.load(models / "resume" / f"{STAGE}.pt", weights_only=True)  # the last good checkpoint loads
    assert state["epoch"] == 2

    rerun = _run([sys.executable, "-m", "monai_kd.cli", *command])
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    assert _trained_epochs(rerun.stdout) == []  # both epochs were done: only the final file is written
    assert not list(models.glob(".tmp-*"))  # the killed save's temporary file is cleaned up
    averaged = next(v for k, v in state["states"].items() if k.startswith("averaged."))
    final = _weights(models / f"{STAGE}.pt")
    assert final.keys() == averaged.keys() and all(torch.equal(final[k], averaged[k]) for k in final)
