"""``monai-kd --help`` and argument errors answer without importing torch or MONAI (issue 15, start-up).

Each case runs the console entry point in a fresh interpreter and reports which heavy modules ended up in
``sys.modules``; no timing is asserted here (``scripts/bench_dicom_inference.py`` measures start-up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import json, sys
sys.argv = ["monai-kd", *json.loads(sys.argv[1])]
code = 0
try:
    from monai_kd.cli import main
    main()
except SystemExit as e:
    code = e.code
except Exception as e:  # an uncaught error still tells which modules were imported
    code = type(e).__name__
heavy = sorted(m for m in ("torch", "monai", "ignite", "numpy", "IPython") if sys.modules.get(m) is not None)
print("PROBE " + json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _probe(args: list[str]) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PAGER": "cat"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE "):]), proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--help"], "infer-dicom"),
        (["train", "--help"], "stage"),
        (["train", "bundles/kd", "--max_epoch", "3"], "did you mean 'max_epochs'"),
        (["train", "bundles/kd", "--stage", "students"], "unknown stage"),
        (["evaluate", "bundles/kd", "--datset_dir", "x"], "did you mean 'dataset_dir'"),
        (["infer-dicom", "--bundle", "bundles/kd", "--input", "/nonexistent/dicom", "--output", "/tmp/x"],
         "input does not exist"),
        (["verify", "bundles/no_such_bundle"], "no_such_bundle"),
    ],
)
def test_help_and_argument_errors_do_not_import_torch(args, expect):
    result, text = _probe(args)
    assert expect in text, text[-2000:]
    assert result["heavy"] == [], f"{args} imported {result['heavy']}"
    if args[-1] != "--help":
        assert result["code"] == 2, text[-2000:]  # a one-line error, not a traceback


def test_probe_sees_torch_when_a_command_really_needs_it(tmp_path):
    """The probe is not blind: ``import monai_kd.engines`` (what a training run reaches) does import torch."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys, monai_kd; monai_kd.engines; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]


def test_bundle_config_parsing_does_not_import_the_training_stack():
    """``infer-dicom`` parses the bundle's inference.json, whose ``_target_`` names ("Compose", "LoadImaged") make
    MONAI's ``ComponentLocator`` run ``inspect.getmembers`` on every loaded ``monai*`` module -- ``monai_kd`` too.
    Its ``dir()`` must not list unloaded lazy subpackages, or that scan imports the trainers and Ignite handlers
    on every inference start-up."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = (
        "import sys, monai_kd\n"
        "from monai.bundle import ConfigParser\n"
        "p = ConfigParser(); p.read_config('bundles/kd/configs/inference.json')\n"
        "p.get_parsed_content('preprocessing')\n"
        "monai_kd.data  # a lazy subpackage still loads on first use\n"
        "print(sorted(m for m in ('monai_kd.engines', 'monai_kd.handlers', 'monai_kd.losses', 'monai_kd.data') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.stdout.strip() == "['monai_kd.data']", out.stderr[-2000:]
