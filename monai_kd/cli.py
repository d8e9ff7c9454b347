"""``monai-kd``: command line for the common jobs on a monai_kd bundle (built with ``fire``).

Examples::

    monai-kd train bundles/kd                         # teacher, student alone, distilled student
    monai-kd train bundles/kd --stage student --max_epochs 5
    monai-kd evaluate bundles/kd                      # test metrics of every trained model
    monai-kd export bundles/kd                        # models/model.ts (TorchScript) and models/model.onnx
    monai-kd results bundles/kd                       # summary of docs/results.json
    monai-kd verify bundles/kd                        # metadata against the shipped schema
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections import defaultdict
from typing import Any

from monai_kd.bundle_utils import BundleError, bundle_file, input_shape, verify_metadata

STAGES = {"all": "run", "teacher": "run_teacher", "student_alone": "run_student_alone", "student": "run_student"}


def _common(bundle: str) -> dict[str, Any]:
    logging_file = os.path.join(bundle, "configs", "logging.conf")
    return {
        "meta_file": bundle_file(bundle, "configs/metadata.json"),
        "logging_file": logging_file if os.path.isfile(logging_file) else None,
        "bundle_root": bundle,
    }


def train(bundle: str, stage: str = "all", **override: Any) -> None:
    """Run a bundle's ``train.json``: every stage, or one of them.

    Args:
        bundle: bundle folder, e.g. ``bundles/kd``.
        stage: ``all`` (default), ``teacher``, ``student_alone`` or ``student`` (distillation from saved teachers).
        override: config overrides, e.g. ``--dataset_dir DIR --max_epochs 5 --device cpu``.
    """
    from monai.bundle import run

    if stage not in STAGES:
        raise BundleError(f"unknown stage '{stage}'; choose one of {sorted(STAGES)}.")
    run(STAGES[stage], config_file=bundle_file(bundle, "configs/train.json"), **_common(bundle), **override)


def evaluate(bundle: str, **override: Any) -> None:
    """Evaluate every trained model of a bundle on the test split; print and return ``eval/metrics.json``.

    Args:
        bundle: bundle folder.
        override: config overrides, e.g. ``--dataset_dir DIR``.
    """
    from monai.bundle import run

    configs = [bundle_file(bundle, "configs/train.json"), bundle_file(bundle, "configs/evaluate.json")]
    run("run", config_file=configs, **_common(bundle), **override)
    output_dir = override.get("output_dir", os.path.join(bundle, "eval"))
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    print(json.dumps(metrics, indent=2))


def export(bundle: str, onnx: bool = True, ckpt_file: str | None = None, **override: Any) -> None:
    """Export the bundle's student (``network_def`` of ``inference.json``) to TorchScript and ONNX.

    Writes ``models/model.ts`` (with the bundle's metadata and inference config embedded, as ``ckpt_export``
    does) and ``models/model.onnx``.

    Args:
        bundle: bundle folder.
        onnx: also export ONNX.
        ckpt_file: weights to export; default ``models/model.pt``.
        override: config overrides.
    """
    from monai.bundle import ckpt_export, onnx_export

    ckpt = ckpt_file or bundle_file(bundle, "models/model.pt")
    shape = input_shape(bundle)
    common = {
        "net_id": "network_def",
        "ckpt_file": ckpt,
        "meta_file": bundle_file(bundle, "configs/metadata.json"),
        "config_file": bundle_file(bundle, "configs/inference.json"),
        "key_in_ckpt": "model",
        "input_shape": shape,
        "bundle_root": bundle,
    }
    written = [os.path.join(bundle, "models", "model.ts")]
    ckpt_export(filepath=written[0], use_trace=True, **common, **override)
    if onnx:
        written.append(os.path.join(bundle, "models", "model.onnx"))
        onnx_export(filepath=written[1], use_trace=True, **common, **override)
    for path in written:
        print(path)


def results(bundle: str, key: str = "model") -> None:
    """Summarise ``docs/results.json``: mean ± std of accuracy and AUC per ``key`` (and benchmark/dataset).

    Args:
        bundle: bundle folder.
        key: record field to group by, e.g. ``model`` or ``method``.
    """
    with open(bundle_file(bundle, "docs/results.json")) as f:
        runs = json.load(f)["runs"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r.get("dataset", r.get("benchmark", "")), r.get(key, ""))].append(r)
    for (dataset, name), rs in sorted(groups.items()):
        row = {"n": len(rs)}
        for metric in ("accuracy", "auc"):
            vals = [float(r[metric]) for r in rs]
            row[metric] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        print(f"{dataset:>16} {name:>16}  n={row['n']}  acc {row['accuracy'][0]:.4f} ± {row['accuracy'][1]:.4f}"
              f"  auc {row['auc'][0]:.4f} ± {row['auc'][1]:.4f}")


def verify(bundle: str) -> None:
    """Check ``configs/metadata.json`` against monai_kd's schema (offline)."""
    verify_metadata(bundle)
    print(f"{bundle}: metadata verified")


def main() -> None:
    """Entry point of the ``monai-kd`` console script."""
    import fire

    try:
        fire.Fire({"train": train, "evaluate": evaluate, "export": export, "results": results, "verify": verify})
    except (BundleError, FileNotFoundError) as e:
        print(f"monai-kd: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
