"""MONAI Label path of the bundles: ``scripts/monailabel/check_server.py`` in the MONAI Label virtualenv.

Runs only where ``.venv-monailabel/`` exists (``bash scripts/monailabel/setup_venv.sh`` creates it; CI does not,
it takes several GB and minutes). The script serves the bundles with ``monailabel start_server`` on 127.0.0.1,
checks ``/info`` and ``/infer/<model>`` on real images, stops the server and runs MONAI Label's
``BundleTrainTask`` on each ``train.json`` for one epoch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv-monailabel" / "bin" / "python"
SCRIPT = REPO / "scripts" / "monailabel" / "check_server.py"


@pytest.mark.slow
def test_monailabel_server_infer_and_train(tmp_path):
    if not VENV_PYTHON.exists():
        pytest.skip("create it with bash scripts/monailabel/setup_venv.sh")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    proc = subprocess.Popen(
        [str(VENV_PYTHON), str(SCRIPT), "--work_dir", str(tmp_path / "work")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output, _ = proc.communicate(timeout=3600)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the script stops its server (process group) before exiting
        output, _ = proc.communicate(timeout=120)
        pytest.fail(f"check_server.py timed out:\n{output[-6000:]}")
    print(output[-6000:])
    assert proc.returncode == 0, output[-6000:]
    summary = output[output.rindex("MONAI Label check summary"):]
    assert "  FAIL  " not in summary and ", 0 failed" in summary
    assert "[PASS] server stopped (process group)" in output
    assert "[PASS] [kd] /infer/kd (image id)" in output and "[PASS] [kd] /infer/kd (file upload)" in output
    assert "[PASS] [kd] MONAI Label BundleTrainTask accepts train.json" in output
    if (REPO / "bundles" / "kdml_seg").is_dir():  # Slicer's Train: datastore items are volume file paths
        assert "[PASS] [kdml_seg] MONAI Label BundleTrainTask trains from datastore file paths" in output
    # the retinal-vessel student (emtkd's default benchmark) on a colour AV-WIDE photograph, and its training entry
    assert "[PASS] [emtkd] /infer/emtkd (image id) emtkd_AV-WIDE_" in output
    assert "100.0000% pixels equal to the bundle's inference.json pipeline" in output
    assert "[PASS] [emtkd] MONAI Label BundleTrainTask accepts train.json" in output
