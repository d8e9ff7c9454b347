"""``multi_gpu_train.json`` of ``kd`` and ``emtkd`` under ``torchrun --nproc_per_node=2`` on CPU (gloo), one short epoch.

Checks: both ranks finish; rank 0 writes the student checkpoint; the student is wrapped in
``DistributedDataParallel`` and the teachers are not (frozen, plain modules); and the loss of each global batch
(the ranks' losses averaged) matches a one-process run of the same config with the same global batch
(``torchrun --nproc_per_node=1`` with twice the per-rank batch size: ``DistributedSampler`` gives the same
permutation, so the global batches hold the same samples).

Tolerance: the two runs differ only where DDP without ``SyncBatchNorm`` differs from one process: each rank
normalises with the BatchNorm statistics of its half batch (and, in ``emtkd``, draws its own random weak / strong views
of its unlabelled rows). Measured on this machine: 0.2-0.3% (``kd``, augmentation off) and 0.02-0.1% (``emtkd``) over
the two iterations, so ``KD_RTOL`` = 1% and ``EMTKD_RTOL`` = 2%. Uses the real BreastMNIST / PneumoniaMNIST archives
with untrained teachers (wiring, not accuracy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

DRIVER = Path(__file__).with_name("torchrun_bundle.py")
KD_RTOL = 0.01
EMTKD_RTOL = 0.02

pytestmark = pytest.mark.slow  # four torchrun launches, each importing torch + MONAI per process (> 60 s)


def _torchrun(nproc: int, configs: list[str], meta: str, overrides: dict, out: Path) -> list[dict]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
        str(DRIVER), "--configs", json.dumps(configs), "--meta", meta, "--stage", "run_student",
        "--overrides", json.dumps(overrides), "--out", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    for r, record in enumerate(records):  # every rank finished its epoch
        assert record["rank"] == r and record["world_size"] == nproc and record["backend"] == "gloo"
        assert record["network"] == "DistributedDataParallel"
        assert record["teachers"] and "DistributedDataParallel" not in record["teachers"]
        assert not record["teacher_requires_grad"]
    return records


def _compare(two: list[dict], one: list[dict], rtol: float, first_rtol: float) -> None:
    assert len(two[0]["losses"]) == len(two[1]["losses"]) == len(one[0]["losses"]) == 2
    assert two[0]["batches"] == two[1]["batches"] and [2 * b for b in two[0]["batches"]] == one[0]["batches"]
    assert two[0]["losses"] != two[1]["losses"]  # the ranks saw different halves of the global batch
    assert two[0]["global_indices"] == one[0]["global_indices"]  # ... whose union is the one-process batch
    assert two[0]["checksums"] == two[1]["checksums"]  # DDP broadcast rank 0's student; the teachers were loaded
    assert two[0]["checksums"] == pytest.approx(one[0]["checksums"], rel=1e-9)  # the same start as one process
    global_two, single = torch.tensor(two[0]["global_losses"]), torch.tensor(one[0]["losses"])
    torch.testing.assert_close(global_two[:1], single[:1], rtol=first_rtol, atol=0.0)
    torch.testing.assert_close(global_two, single, rtol=rtol, atol=0.0)


def test_kd_multi_gpu_config_under_torchrun(tmp_path, data_dir):
    bundle = REPO / "bundles" / "kd"
    configs = [str(bundle / "configs" / "train.json"), str(bundle / "configs" / "multi_gpu_train.json")]
    meta = str(bundle / "configs" / "metadata.json")
    torch.manual_seed(0)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs[0])
    teacher = parser.get_parsed_content("teacher_def")
    runs = {}
    for nproc, batch in ((2, 32), (1, 64)):
        root = tmp_path / f"np{nproc}"
        (root / "models").mkdir(parents=True)
        torch.save(teacher.state_dict(), root / "models" / "teacher.pt")
        overrides = {
            "bundle_root": str(root), "dataset_dir": str(data_dir / "breastmnist"), "max_epochs": 1,
            "batch_size": batch, "val_interval": 2, "train#trainer#epoch_length": 2,
            "train#preprocessing": "@val_transforms",  # no augmentation: both runs see the same images
        }
        runs[nproc] = _torchrun(nproc, configs, meta, overrides, tmp_path / f"out{nproc}")
        assert (root / "models" / "model.pt").is_file()  # rank 0 wrote the checkpoint
    _compare(runs[2], runs[1], rtol=KD_RTOL, first_rtol=KD_RTOL)


def test_emtkd_multi_gpu_config_under_torchrun(tmp_path, data_dir):
    bundle = REPO / "bundles" / "emtkd"
    names = ["train_classification.json", "train_pneumonia.json"]  # the classification configuration, explicitly
    configs = [str(bundle / "configs" / n) for n in names] + [str(bundle / "configs" / "multi_gpu_train.json")]
    meta = str(bundle / "configs" / "metadata.json")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs[:2])
    parser["dataset_dir"] = str(data_dir / "pneumoniamnist")
    torch.manual_seed(0)
    teachers = {name: parser.get_parsed_content(f"{name}#network_def").state_dict() for name in ("teacher_a", "teacher_b")}
    runs = {}
    for nproc, scale in ((2, 1), (1, 2)):
        root = tmp_path / f"np{nproc}"
        (root / "models").mkdir(parents=True)
        for name, state in teachers.items():
            torch.save({"model": state}, root / "models" / f"{name}.pt")
        overrides = {
            "bundle_root": str(root), "dataset_dir": str(data_dir / "pneumoniamnist"), "max_epochs": 1,
            "epoch_length": 2, "val_interval": 2, "labelled_batch_size": 8 * scale, "unlabelled_batch_size": 16 * scale,
            "train#preprocessing": "@val_transforms",
        }
        runs[nproc] = _torchrun(nproc, configs, meta, overrides, tmp_path / f"out{nproc}")
        assert (root / "models" / "model.pt").is_file()
    _compare(runs[2], runs[1], rtol=EMTKD_RTOL, first_rtol=EMTKD_RTOL)
