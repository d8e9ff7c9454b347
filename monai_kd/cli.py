"""``monai-kd``: command line for the common jobs on a monai_kd bundle (built with ``fire``).

Examples::

    monai-kd run bundles/kd                           # train all stages, evaluate on test, export the student
    monai-kd train bundles/kd                         # teacher, student alone, distilled student
    monai-kd train bundles/kd --stage student --max_epochs 5
    monai-kd train bundles/kd                         # again after a crash: continues each stage, skips finished ones
    monai-kd train bundles/kd --resume false          # retrain every stage from scratch
    monai-kd evaluate bundles/kd                      # test metrics of every trained model
    monai-kd export bundles/kd                        # models/model.ts (TorchScript) and models/model.onnx
    monai-kd export bundles/kd --int8 --overlay bundles/kd/configs/student_fast.json   # + models/model_int8.onnx
    monai-kd results kd                               # evidence: mean ± std, paired differences, 95% CIs
    monai-kd verify bundles/kd                        # metadata against the shipped schema
    monai-kd datalist DATA --images "images/*.png" --masks "masks/{stem}.png" --output my.json   # then --datalist my.json
    monai-kd infer-dicom --bundle bundles/kd --input DICOM_DIR --output OUT_DIR [--modality CT] [--nifti] [--all_series]
    monai-kd serve --work_dir /var/lib/monai-kd --bundle BUNDLE --port 11112 --destination ORTHANC@127.0.0.1:4242
    monai-kd infer-dicomweb --url http://127.0.0.1:8042/dicom-web --study UID [--series UID] --bundle BUNDLE
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from monai_kd.bundle_utils import BundleError, bundle_file, check_overrides, verify_metadata
from monai_kd.cli_datalist import datalist

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


def _summary(bundle: str, override: dict[str, Any], command: str) -> None:
    """Print the closing summary (models, parameters, test metrics with intervals, files): the last thing shown."""
    from monai_kd.run_summary import summary_table

    root = override.get("bundle_root", bundle)
    sys.stderr.flush()
    print("\n" + summary_table(root, command, override.get("output_dir")), flush=True)


def train(bundle: str, stage: str = "all", resume: bool = True, **override: Any) -> None:
    """Run a bundle's ``train.json``: every stage, or one of them; end with a summary of the checkpoints.

    Every stage checkpoints at each epoch end (``models/resume/``); re-running the same command after a crash
    continues each stage from its last completed epoch and skips finished stages (see ``docs/reliability.md``).

    Args:
        bundle: bundle folder, e.g. ``bundles/kd``.
        stage: ``all`` (default), ``teacher`` / ``teachers`` (bundles with several), ``student_alone`` or ``student``
            (distillation from saved teachers).
        resume: continue from the stages' checkpoints; ``--resume false`` retrains every stage from scratch.
        override: config overrides, e.g. ``--dataset_dir DIR --max_epochs 5 --device cpu``.
    """
    _train(bundle, stage, resume, override)
    _summary(bundle, override, "train")


def _train(bundle: str, stage: str, resume: Any, override: dict[str, Any]) -> None:
    if stage not in STAGES:
        raise BundleError(f"unknown stage '{stage}'; choose one of {sorted(STAGES)}.")
    resume = _flag("resume", resume)
    config = bundle_file(bundle, "configs/train.json")
    check_overrides(config, override)
    from monai.bundle import run  # after the checks: argument errors answer without importing torch / MONAI

    from monai_kd.engines.resume import resumable_training

    with resumable_training(resume=resume):
        run(STAGES[stage], config_file=config, **_common(bundle, override))


def _flag(name: str, value: Any) -> bool:
    """A command-line boolean: ``True``/``False`` or the words true/false/yes/no/1/0."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if str(value).lower() not in words:
        raise BundleError(f"--{name} expects true or false, got '{value}'.")
    return words[str(value).lower()]


def evaluate(bundle: str, **override: Any) -> None:
    """Evaluate every trained model of a bundle on the test split (``eval/metrics.json``, the model card).

    Ends with a summary table: each model's parameters and test metrics with their 95% intervals, and the files
    written.

    Args:
        bundle: bundle folder.
        override: config overrides, e.g. ``--dataset_dir DIR``.
    """
    _evaluate(bundle, override)
    _summary(bundle, override, "evaluate")


def _evaluate(bundle: str, override: dict[str, Any]) -> None:
    configs = [bundle_file(bundle, "configs/train.json"), bundle_file(bundle, "configs/evaluate.json")]
    check_overrides(configs, override)
    from monai.bundle import run

    run("run", config_file=configs, **_common(bundle, override))


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
    for path in _export(bundle, onnx, ckpt_file, output_dir, override, int8=int8, overlay=overlay):
        print(path)


def _export(
    bundle: str,
    onnx: bool,
    ckpt_file: str | None,
    output_dir: str | None,
    override: dict[str, Any],
    int8: bool = False,
    overlay: str | None = None,
) -> list[str]:
    """Write the exports and refresh the model card's checksums; the written paths.

    The metadata embedded in ``model.ts`` and ``model.onnx`` (``metadata_props``) and the traced input shape follow
    the configuration exported: a student trained with ``--in_channels 3`` is exported with ``--in_channels 3`` and
    its metadata declares three channels (:func:`~monai_kd.bundle_utils.configured_metadata`).
    """
    root = str(override.get("bundle_root", bundle))
    ckpt = ckpt_file or os.path.join(root, "models", "model.pt")
    if not os.path.isfile(ckpt):
        raise BundleError(f"no weights to export: '{ckpt}' does not exist (train first, or pass --ckpt_file).")
    overlays = [overlay] if overlay else []
    for path in overlays:
        if not os.path.isfile(path):
            raise BundleError(f"overlay config '{path}' does not exist.")
    configs = [bundle_file(bundle, "configs/inference.json"), *overlays]
    from monai_kd.bundle_utils import checkpoint_in_channels, config_network_input, configured_metadata

    configured = config_network_input(configs, {"bundle_root": bundle, **override})
    trained = checkpoint_in_channels(ckpt)
    if configured["in_channels"] is not None and trained is not None and trained != configured["in_channels"]:
        raise BundleError(
            f"'{ckpt}' was trained with {trained} input channel(s) but the config builds {configured['in_channels']}: "
            f"export with the training's --in_channels {trained}."
        )
    with open(bundle_file(bundle, "configs/metadata.json")) as f:
        meta = configured_metadata(json.load(f), configured["in_channels"], configured["spatial_size"])
    spec = next(iter(meta["network_data_format"]["inputs"].values()))
    shape = [1, int(spec["num_channels"]), *[int(s) for s in spec["spatial_shape"]]]
    from monai.bundle import ckpt_export, onnx_export

    from monai_kd.run_summary import quiet_third_party

    quiet_third_party(_VERBOSE)  # again after importing torch (it resets its loggers) and after any bundle run

    out = output_dir or os.path.join(root, "models")
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.TemporaryDirectory()
    meta_file = os.path.join(tmp.name, "metadata.json")  # embedded in model.ts (ckpt_export) and model.onnx
    with open(meta_file, "w") as f:
        json.dump(meta, f, indent=4)
    common = {
        "net_id": "network_def",
        "ckpt_file": ckpt,
        "meta_file": meta_file,
        "config_file": configs,
        "input_shape": shape,
        "bundle_root": bundle,
        **override,
    }
    written = [os.path.join(out, "model.ts")]
    ckpt_export(filepath=written[0], use_trace=True, **common)
    if onnx:
        written.append(os.path.join(out, "model.onnx"))
        dynamic = {"input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}}}
        if not _VERBOSE:  # the exporter's step-by-step progress lines, shown with --verbose
            dynamic["verbose"] = False
        onnx_export(filepath=written[1], use_trace=True, converter_kwargs=dynamic, **common)
        _embed_metadata(written[1], meta)
    tmp.cleanup()
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
    return written


def _embed_metadata(onnx_file: str, meta: dict) -> None:
    """Store the bundle metadata in the ONNX model's ``metadata_props`` (key ``metadata.json``), as ``model.ts``
    holds it among its extra files."""
    import onnx

    model = onnx.load(onnx_file)
    props = [p for p in model.metadata_props if p.key != "metadata.json"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key="metadata.json", value=json.dumps(meta))
    onnx.save(model, onnx_file)


def results(bundle: str, key: str = "model") -> None:
    """Print a bundle's evidence from ``docs/results.json``: mean ± std over seeds per method, and the paired
    differences (method vs baseline, same seed) with 95% confidence intervals (Student t over seeds).

    Args:
        bundle: bundle folder (``bundles/kd``) or the name of a bundle of this repository (``kd``).
        key: record field naming the method, for a bundle without its own comparison spec.
    """
    from monai_kd.evidence.summary import summary  # pure Python: no torch / MONAI

    print(summary(bundle, key))


def pipeline(bundle: str, resume: bool = True, **override: Any) -> None:
    """Train every stage, evaluate every model on the test split, then export the student; end with a summary.

    Leaves ``models/model.pt`` (student), ``models/model.ts`` and ``models/model.onnx`` (exports),
    ``models/teacher.pt``, ``models/student_alone.pt`` and ``eval/metrics.json`` under ``bundle_root``.

    Args:
        bundle: bundle folder.
        resume: continue interrupted stages and skip finished ones (``--resume false``: retrain everything).
        override: config overrides shared by all steps, e.g. ``--bundle_root DIR --dataset_dir DIR``.
    """
    _train(bundle, "all", resume, override)
    _evaluate(bundle, override)
    root = override.get("bundle_root", bundle)
    # the training's overrides (e.g. --in_channels 3) build the exported network and its metadata
    _export(bundle, True, os.path.join(root, "models", "model.pt"), os.path.join(root, "models"), override)
    _summary(bundle, override, "run")


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
    force: bool = False,
    overlay: str | None = None,
    segment_names: list[str] | str | None = None,
    **override: Any,
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
        force: run on a series outside the bundle's input contract (metadata ``input_contract``); the SR / SEG and
            the JSON record the override.
        overlay: a config file layered over ``inference.json``; default for a photograph (a DICOM image without
            patient geometry): the bundle's ``configs/inference_2d.json`` when it has one.
        segment_names: names of the segments (labels 1, 2, ...) in the SEG, e.g. ``"retinal vessel"`` or
            ``"['liver','spleen']"``; default the bundle's (``label 1``, ... for a model of another channel count).
        override: config overrides, as the training took them: a student trained with ``--in_channels 3`` runs
            with ``--in_channels 3`` (without it, the channel count of the weights is used); its input contract
            then asks for colour input.
    """
    if not os.path.exists(input):  # answered before torch / MONAI are imported
        raise FileNotFoundError(f"input does not exist: '{input}'.")
    _check_inference_overrides(bundle, overlay, override)
    if all_series:
        if series_uid:
            raise ValueError("--all_series runs every series; --series_uid selects one: give one of them.")
        from monai_kd.dicom_inference import infer_dicom_folder

        progress = lambda done, total, uid: print(f"[{done}/{total}] {uid}", file=sys.stderr)  # noqa: E731
        for path in infer_dicom_folder(bundle, input, output, modality=modality, description=description, nifti=nifti,
                                       ckpt_file=ckpt_file, device=device, progress=progress, force=force,
                                       overlay=overlay, segment_names=_names(segment_names), **override):
            print(path)
        return
    from monai_kd.dicom_inference import infer_dicom as _infer

    written = _infer(
        bundle, input, output, modality=modality, description=description, series_uid=series_uid,
        nifti=nifti, ckpt_file=ckpt_file, device=device, force=force, overlay=overlay,
        segment_names=_names(segment_names), **override,
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
    force: bool = False,
    overlay: str | None = None,
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
        force: with ``bundle``: run it on series outside its input contract (recorded in the outputs); by default
            they are quarantined with the reason. With ``routes``, set ``"force": true`` on the route instead.
        overlay: with ``bundle``: a config file layered over its ``inference.json`` (e.g.
            ``bundles/kdml_seg/configs/inference_2d.json`` for photographs); with ``routes``, a route's ``"overlay"``.
            The network's channel count is read from the weights.
    """
    import logging

    from monai_kd.node import load_routes, parse_address
    from monai_kd.node.server import DicomNode

    if (bundle is None) == (routes is None):
        raise BundleError("give either --bundle (one bundle for every series) or --routes (a rules file).")
    if routes is not None:
        if ckpt_file or modality or description or force or overlay:
            raise BundleError("--ckpt_file, --modality, --description, --force and --overlay go with --bundle; "
                              "put them in the routes file.")
        rules = load_routes(routes)
    else:
        entry = {"name": os.path.basename(os.path.normpath(bundle)), "bundle": bundle, "ckpt_file": ckpt_file,
                 "modality": modality, "description": description, "force": force, "overlay": overlay}
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
    force: bool = False,
    overlay: str | None = None,
    segment_names: list[str] | str | None = None,
    **override: Any,
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
        force: run on a series outside the bundle's input contract; the outputs record the override.
        overlay: a config file layered over ``inference.json`` (see ``infer-dicom``).
        segment_names: names of the segments in the SEG (see ``infer-dicom``).
        override: config overrides, e.g. ``--in_channels 3`` (see ``infer-dicom``).
    """
    _check_inference_overrides(bundle, overlay, override)
    from monai_kd.node.dicomweb import infer_dicomweb as _infer

    result = _infer(url, study, bundle, series_uid=series, modality=modality, description=description,
                    ckpt_file=ckpt_file, output=output, store=store, device=device, force=force, overlay=overlay,
                    override=override, segment_names=_names(segment_names))
    print(json.dumps(result, indent=2))


def _names(names: list[str] | tuple[str, ...] | str | None) -> list[str] | None:
    """``--segment_names`` as a list: one name (``"retinal vessel"``) or a list (``"['liver','spleen']"``)."""
    if names is None or isinstance(names, (list, tuple)):
        return None if names is None else [str(n) for n in names]
    return [str(names)]


def _check_inference_overrides(bundle: str, overlay: str | None, override: dict[str, Any]) -> None:
    """Refuse an overlay that does not exist or an override that names no key of the inference configs (one line,
    before torch is imported)."""
    configs = [bundle_file(bundle, "configs/inference.json")]
    if overlay is not None:
        if not os.path.isfile(overlay):
            raise BundleError(f"overlay config '{overlay}' does not exist.")
        configs.append(overlay)
    check_overrides(configs, override)


def verify(bundle: str) -> None:
    """Check ``configs/metadata.json`` against monai_kd's schema (offline)."""
    verify_metadata(bundle)
    print(f"{bundle}: metadata verified")


_VERBOSE = False


def _notes_to_stderr() -> None:
    """Show what the inference decides by itself (e.g. the 2D overlay it picked) as ``monai-kd: note: ...`` lines."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("monai-kd: note: %(message)s"))
    log = logging.getLogger("monai_kd.dicom_inference")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main() -> None:
    """Entry point of the ``monai-kd`` console script.

    ``--verbose`` (anywhere on the command line) shows the third-party logs and warnings (ONNX exporter,
    onnxscript, deprecations) that are kept quiet by default.
    """
    global _VERBOSE
    import fire

    from monai_kd.run_summary import quiet_third_party

    argv = sys.argv[1:]
    _VERBOSE = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    quiet_third_party(_VERBOSE)
    _notes_to_stderr()

    # fire's help text asks IPython's object inspector for docstrings when IPython is installed (~1 s of imports)
    # and falls back to ``inspect`` without it: keep ``monai-kd --help`` fast (``--interactive`` is not offered).
    sys.modules.setdefault("IPython", None)  # type: ignore[arg-type]
    try:
        fire.Fire(command=argv, component={"datalist": datalist, "run": pipeline, "infer-dicom": infer_dicom, "serve": serve, "infer-dicomweb": infer_dicomweb, "train": train, "evaluate": evaluate, "export": export, "results": results, "verify": verify})
    except Exception as e:  # report the root cause in one line; MONAI wraps config errors in RuntimeErrors
        cause = root_cause(e)
        if not isinstance(cause, CLEAR_ERRORS):
            raise
        _close_progress_bars()
        print(f"monai-kd: error: {type(cause).__name__}: {cause}", file=sys.stderr)
        sys.exit(2)


def _close_progress_bars() -> None:
    """End an interrupted progress bar's line, so the error starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


#: errors that describe bad input in their message (file or key named): printed as one line, exit code 2
CLEAR_ERRORS = (BundleError, OSError, ValueError, KeyError)


def root_cause(error: BaseException) -> BaseException:
    """The exception to report from a chain (``raise ... from ...`` or implicit context).

    MONAI wraps config errors in ``RuntimeError``s: the outermost error of :data:`CLEAR_ERRORS` types below them is
    the one that says what is wrong (a clear package error is not unwrapped down to the library exception it was
    raised from). Without one, the innermost exception.
    """
    chain = [error]
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
        chain.append(error)
    return next((e for e in chain if isinstance(e, CLEAR_ERRORS)), chain[-1])


if __name__ == "__main__":
    main()
