"""``monai-kd``: command line for the common jobs on a monai_kd bundle (built with ``fire``).

Examples::

    monai-kd run bundles/kd                           # train all stages, evaluate on test, export the student
    monai-kd train bundles/kd                         # teacher, student alone, distilled student
    monai-kd train bundles/kd --stage student --max_epochs 5
    monai-kd evaluate bundles/kd                      # test metrics of every trained model
    monai-kd export bundles/kd                        # models/model.ts (TorchScript) and models/model.onnx
    monai-kd export bundles/kd --int8 --overlay bundles/kd/configs/student_fast.json   # + models/model_int8.onnx
    monai-kd results bundles/kd                       # summary of docs/results.json
    monai-kd verify bundles/kd                        # metadata against the shipped schema
    monai-kd infer-dicom --bundle bundles/kd --input DICOM_DIR --output OUT_DIR [--modality CT] [--nifti] [--all_series]
    monai-kd serve --work_dir /var/lib/monai-kd --bundle BUNDLE --port 11112 --destination ORTHANC@127.0.0.1:4242
    monai-kd infer-dicomweb --url http://127.0.0.1:8042/dicom-web --study UID [--series UID] --bundle BUNDLE
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections import defaultdict
from typing import Any

from monai_kd.bundle_utils import BundleError, bundle_file, check_overrides, input_shape, verify_metadata

STAGES = {
    "all": "run",
    "teacher": "run_teacher",
    "teachers": "run_teachers",
    "student_alone": "run_student_alone",
    "student": "run_student",
}


def _common(bundle: str, override: dict[str, Any]) -> dict[str, Any]:
    """Arguments every ``monai.bundle`` call gets: metadata, logging config, ``bundle_root`` and the overrides."""
    logging_file = os.path.join(bundle, "configs", "logging.conf")
    return {
        "meta_file": bundle_file(bundle, "configs/metadata.json"),
        "logging_file": logging_file if os.path.isfile(logging_file) else None,
        "bundle_root": bundle,
        **override,
    }


def train(bundle: str, stage: str = "all", **override: Any) -> None:
    """Run a bundle's ``train.json``: every stage, or one of them.

    Args:
        bundle: bundle folder, e.g. ``bundles/kd``.
        stage: ``all`` (default), ``teacher`` / ``teachers`` (bundles with several), ``student_alone`` or ``student``
            (distillation from saved teachers).
        override: config overrides, e.g. ``--dataset_dir DIR --max_epochs 5 --device cpu``.
    """
    if stage not in STAGES:
        raise BundleError(f"unknown stage '{stage}'; choose one of {sorted(STAGES)}.")
    config = bundle_file(bundle, "configs/train.json")
    check_overrides(config, override)
    from monai.bundle import run  # after the checks: argument errors answer without importing torch / MONAI

    run(STAGES[stage], config_file=config, **_common(bundle, override))


def evaluate(bundle: str, **override: Any) -> None:
    """Evaluate every trained model of a bundle on the test split; print and return ``eval/metrics.json``.

    Args:
        bundle: bundle folder.
        override: config overrides, e.g. ``--dataset_dir DIR``.
    """
    configs = [bundle_file(bundle, "configs/train.json"), bundle_file(bundle, "configs/evaluate.json")]
    check_overrides(configs, override)
    from monai.bundle import run

    run("run", config_file=configs, **_common(bundle, override))
    output_dir = override.get("output_dir", os.path.join(override.get("bundle_root", bundle), "eval"))
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    print(json.dumps(metrics, indent=2))


def export(
    bundle: str,
    onnx: bool = True,
    ckpt_file: str | None = None,
    output_dir: str | None = None,
    int8: bool = False,
    overlay: str | None = None,
    **override: Any,
) -> None:
    """Export the bundle's student (``network_def`` of ``inference.json``) to TorchScript and ONNX.

    Writes ``models/model.ts`` (with the bundle's metadata and inference config embedded, as ``ckpt_export``
    does) and ``models/model.onnx``, and records their checksums in the model card (``eval/model_card.json``) when
    the evaluation wrote one.

    Args:
        bundle: bundle folder.
        onnx: also export ONNX.
        ckpt_file: weights to export (a plain state dict, as ``CheckpointSaver`` writes for one object);
            default ``models/model.pt``.
        output_dir: where to write ``model.ts`` / ``model.onnx``; default the bundle's ``models/``.
        int8: also write ``model_int8.onnx``, quantised by ONNX Runtime (static, calibrated on 256 training images
            of the bundle's ``train.json``; see :func:`monai_kd.quantization.quantize_onnx`).
        overlay: a config file layered over ``inference.json`` and ``train.json``, e.g. the fast student's
            ``configs/student_fast.json``.
        override: config overrides.
    """
    ckpt = ckpt_file or bundle_file(bundle, "models/model.pt")
    overlays = [overlay] if overlay else []
    for path in overlays:
        if not os.path.isfile(path):
            raise BundleError(f"overlay config '{path}' does not exist.")
    shape = input_shape(bundle)
    from monai.bundle import ckpt_export, onnx_export

    common = {
        "net_id": "network_def",
        "ckpt_file": ckpt,
        "meta_file": bundle_file(bundle, "configs/metadata.json"),
        "config_file": [bundle_file(bundle, "configs/inference.json"), *overlays],
        "input_shape": shape,
        "bundle_root": bundle,
        **override,
    }
    out = output_dir or os.path.join(bundle, "models")
    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, "model.ts")]
    ckpt_export(filepath=written[0], use_trace=True, **common)
    if onnx:
        written.append(os.path.join(out, "model.onnx"))
        dynamic = {"input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}}}
        onnx_export(filepath=written[1], use_trace=True, converter_kwargs=dynamic, **common)
    if int8:
        if not onnx:
            raise BundleError("--int8 quantises the ONNX export: drop --onnx False.")
        from monai_kd.quantization import bundle_calibration_images, quantize_onnx

        train_configs = [bundle_file(bundle, "configs/train.json"), *overlays]
        images = bundle_calibration_images(train_configs, **{k: v for k, v in override.items() if k != "bundle_root"})
        written.append(quantize_onnx(written[1], os.path.join(out, "model_int8.onnx"), images))
    if os.path.basename(os.path.normpath(out)) == "models":  # a model card beside it records the new checksums
        from monai_kd.model_card import refresh_exports

        refresh_exports(os.path.dirname(os.path.normpath(out)) or ".")
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


def pipeline(bundle: str, **override: Any) -> None:
    """Train every stage, evaluate every model on the test split, then export the student.

    Leaves ``models/model.pt`` (student), ``models/model.ts`` and ``models/model.onnx`` (exports),
    ``models/teacher.pt``, ``models/student_alone.pt`` and ``eval/metrics.json`` under ``bundle_root``.

    Args:
        bundle: bundle folder.
        override: config overrides shared by all steps, e.g. ``--bundle_root DIR --dataset_dir DIR``.
    """
    train(bundle, stage="all", **override)
    evaluate(bundle, **override)
    root = override.get("bundle_root", bundle)
    export(bundle, ckpt_file=os.path.join(root, "models", "model.pt"), output_dir=os.path.join(root, "models"))


def infer_dicom(
    bundle: str,
    input: str,
    output: str,
    modality: str | None = None,
    description: str | None = None,
    series_uid: str | None = None,
    nifti: bool = False,
    ckpt_file: str | None = None,
    device: str = "cpu",
    all_series: bool = False,
) -> None:
    """Run a bundle's student on a DICOM series (or a NIfTI file) and write DICOM SEG / SR outputs.

    Segmentation bundles write ``OUT/<SeriesInstanceUID>.seg.dcm`` (plus ``.seg.nii.gz`` with ``--nifti``);
    classification bundles write a Comprehensive SR ``.sr.dcm`` and a ``.classification.json`` summary.
    Outputs are written atomically, never into the input, and carry new UIDs.

    Args:
        bundle: bundle folder.
        input: folder with one or more DICOM series, a multi-frame DICOM file, or a NIfTI file.
        output: output folder (must not be inside ``input``).
        modality: select the series by Modality (e.g. ``CT``).
        description: select by a case-insensitive substring of SeriesDescription.
        series_uid: select by SeriesInstanceUID (quote it on the command line).
        nifti: also write the segmentation as NIfTI.
        ckpt_file: student weights; default ``BUNDLE/models/model.pt``; an ``.onnx`` file (e.g. the int8
            ``model_int8.onnx``) is run by ONNX Runtime.
        device: ``cpu`` or ``cuda:N``.
        all_series: run on every series of a folder of studies (selected by ``modality`` / ``description`` if
            given), loading the model once.
    """
    if not os.path.exists(input):  # answered before torch / MONAI are imported
        raise FileNotFoundError(f"input does not exist: '{input}'.")
    if all_series:
        if series_uid:
            raise ValueError("--all_series runs every series; --series_uid selects one: give one of them.")
        from monai_kd.dicom_inference import infer_dicom_folder

        progress = lambda done, total, uid: print(f"[{done}/{total}] {uid}", file=sys.stderr)  # noqa: E731
        for path in infer_dicom_folder(bundle, input, output, modality=modality, description=description, nifti=nifti,
                                       ckpt_file=ckpt_file, device=device, progress=progress):
            print(path)
        return
    from monai_kd.dicom_inference import infer_dicom as _infer

    written = _infer(
        bundle, input, output, modality=modality, description=description, series_uid=series_uid,
        nifti=nifti, ckpt_file=ckpt_file, device=device,
    )
    for path in written:
        print(path)


def serve(
    work_dir: str,
    bundle: str | None = None,
    routes: str | None = None,
    ckpt_file: str | None = None,
    modality: str | None = None,
    description: str | None = None,
    ae_title: str = "MONAIKD",
    host: str = "127.0.0.1",
    port: int = 11112,
    quiet_time: float = 30.0,
    workers: int = 1,
    destination: str | None = None,
    output_dir: str | None = None,
    device: str = "cpu",
    max_slices: int = 2000,
    max_associations: int = 16,
    min_free_mb: float = 500.0,
) -> None:
    """Run a DICOM node: receive series by C-STORE, run a bundle's student, send the SEG / SR back.

    Series are collected per Series Instance UID and processed once no instance arrived for ``quiet_time``
    seconds; the work queue lives in ``work_dir`` (resumed on restart, even after ``kill -9``); bad series go to
    ``work_dir/quarantine`` with their reason. Logs go to stderr and ``work_dir/node.log``. Stops on SIGINT/SIGTERM.

    Args:
        work_dir: queue folder (local disk).
        bundle: the one bundle to run on every series (or use ``routes``).
        routes: JSON routing rules (Modality / SeriesDescription -> bundle, see ``monai_kd.node.routing``).
        ckpt_file: weights of ``bundle``; default its ``models/model.pt``.
        modality: with ``bundle``: only series of this Modality (others are quarantined as unrouted).
        description: with ``bundle``: only series whose SeriesDescription matches this regular expression.
        ae_title: our AE title.
        host: address to listen on.
        port: port to listen on.
        quiet_time: seconds without a new instance, after the sending association ended, after which a
            series is complete.
        workers: series processed at once.
        destination: ``AE@host:port`` to C-STORE results to (e.g. the PACS).
        output_dir: folder to write results to.
        device: ``cpu`` or ``cuda:N``.
        max_slices: larger series are refused.
        max_associations: associations served at once.
        min_free_mb: refuse instances (Out of Resources) below this free disk space.
    """
    import logging

    from monai_kd.node import load_routes, parse_address
    from monai_kd.node.server import DicomNode

    if (bundle is None) == (routes is None):
        raise BundleError("give either --bundle (one bundle for every series) or --routes (a rules file).")
    if routes is not None:
        if ckpt_file or modality or description:
            raise BundleError("--ckpt_file, --modality and --description go with --bundle; put them in the routes file.")
        rules = load_routes(routes)
    else:
        entry = {"name": os.path.basename(os.path.normpath(bundle)), "bundle": bundle, "ckpt_file": ckpt_file,
                 "modality": modality, "description": description}
        rules = load_routes([entry])
    node = DicomNode(
        work_dir, rules, ae_title=ae_title, host=host, port=port, quiet_time=quiet_time, workers=workers,
        destination=None if destination is None else parse_address(destination), output_dir=output_dir,
        device=device, max_slices=max_slices, max_associations=max_associations, min_free_mb=min_free_mb,
    )
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(os.path.join(work_dir, "node.log"))],
    )
    for noisy in ("pynetdicom", "highdicom"):  # per-association and per-module chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    node.serve_forever()


def infer_dicomweb(
    url: str,
    study: str,
    bundle: str,
    series: str | None = None,
    modality: str | None = None,
    description: str | None = None,
    ckpt_file: str | None = None,
    output: str | None = None,
    store: bool = True,
    device: str = "cpu",
) -> None:
    """Pull a series with WADO-RS, run a bundle's student, store the SEG / SR back with STOW-RS.

    Args:
        url: DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        study: Study Instance UID (quote it).
        bundle: bundle folder.
        series: Series Instance UID; without it the study's series is chosen with ``modality`` / ``description``.
        modality: select the study's series by Modality.
        description: select by a substring of SeriesDescription.
        ckpt_file: student weights; default ``BUNDLE/models/model.pt``.
        output: also keep the outputs in this folder.
        store: store the DICOM result back with STOW-RS (``--nostore`` to skip).
        device: ``cpu`` or ``cuda:N``.
    """
    from monai_kd.node.dicomweb import infer_dicomweb as _infer

    result = _infer(url, study, bundle, series_uid=series, modality=modality, description=description,
                    ckpt_file=ckpt_file, output=output, store=store, device=device)
    print(json.dumps(result, indent=2))


def verify(bundle: str) -> None:
    """Check ``configs/metadata.json`` against monai_kd's schema (offline)."""
    verify_metadata(bundle)
    print(f"{bundle}: metadata verified")


def main() -> None:
    """Entry point of the ``monai-kd`` console script."""
    import fire

    # fire's help text asks IPython's object inspector for docstrings when IPython is installed (~1 s of imports)
    # and falls back to ``inspect`` without it: keep ``monai-kd --help`` fast (``--interactive`` is not offered).
    sys.modules.setdefault("IPython", None)  # type: ignore[arg-type]
    try:
        fire.Fire({"run": pipeline, "infer-dicom": infer_dicom, "serve": serve, "infer-dicomweb": infer_dicomweb, "train": train, "evaluate": evaluate, "export": export, "results": results, "verify": verify})
    except Exception as e:  # report the root cause in one line; MONAI wraps config errors in RuntimeErrors
        cause = root_cause(e)
        if not isinstance(cause, (BundleError, FileNotFoundError, ValueError, KeyError)):
            raise
        print(f"monai-kd: error: {type(cause).__name__}: {cause}", file=sys.stderr)
        sys.exit(2)


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (``raise ... from ...`` or implicit context)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


if __name__ == "__main__":
    main()
