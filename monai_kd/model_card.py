"""Model cards: what an exported student is, generated from the evaluated numbers, never written by hand.

A clinical reviewer asks of an exported model: what was it trained on and how was the data split, how good is it
and how sure is that number, which inputs does it accept, how big and fast is it against its teacher, which files
are the model and have they been altered, under which licence may it be used. :func:`write_model_card` answers
from the files an evaluation leaves (``eval/metrics.json``, ``eval/predictions.json`` written by
:class:`monai_kd.handlers.PredictionWriter`), the bundle's ``configs/metadata.json`` and the exported model files,
and writes ``eval/model_card.json`` and ``eval/model_card.md``. Test metrics carry 95% bootstrap confidence
intervals resampled by subject (person) where subjects are known (:func:`monai_kd.metrics.bootstrap_ci`):
classification records hold per-sample class probabilities (accuracy, AUC, NLL, ECE); segmentation records hold
per-image Dice (``"reduction": "mean"``, the mean over images) or per-image foreground true/false positive and false
negative pixel counts (``"reduction": "pooled"``, Dice of the summed counts, as MONAI's ``ConfusionMatrix`` reports).

The card also quotes the licence of the training data (the ``SOURCE.txt`` of the data folder), the latency measured
by ``scripts/bench_latency.py`` (``docs/bench_latency.json``) when that benchmark was run, and carries a
``card_version`` (the bundle version and a digest of the card's content) that DICOM outputs name.

:func:`verify_model_file` checks a model file against the checksum its card recorded, so a deployment can refuse a
model that is not the one the card describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from monai_kd.bundle_utils import CLASSIFICATION_FORMATS, configured_metadata
from monai_kd.io.atomic import atomic_paths
from monai_kd.metrics.uncertainty import bootstrap_ci, expected_calibration_error

__all__ = [
    "CARD_NAME",
    "build_model_card",
    "card_for_model",
    "configuration_metadata",
    "data_licence",
    "write_segmentation_records",
    "refresh_exports",
    "split_sizes",
    "verify_model_file",
    "write_model_card",
]

CARD_NAME = "model_card"
#: exported files of a bundle's student whose checksums the card records (those that exist)
EXPORT_FILES = ("models/model.pt", "models/model.ts", "models/model.onnx")
#: fewer resampling units than this: the card warns that the interval is not reliable
FEW_SUBJECTS = 10
_PACKAGES = ("monai-kd", "torch", "monai", "pytorch-ignite", "numpy", "onnx", "onnxruntime", "highdicom", "pydicom")


def sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_sizes(splits: Mapping[str, Sequence[Mapping]], subject_key: str = "subject") -> dict[str, dict[str, Any]]:
    """Images and subjects of each split, for a model card (``"subjects": None`` where items name no subject).

    Args:
        splits: split name -> its datalist items (e.g. ``{"train": @train_datalist, "test": @test_datalist}``).
        subject_key: item field naming the subject.
    """
    out = {}
    for name, items in splits.items():
        subjects = {str(i[subject_key]) for i in items if subject_key in i}
        out[name] = {"images": len(items), "subjects": len(subjects) if subjects else None}
    return out


def _auc(probs: np.ndarray, labels: np.ndarray) -> float:
    from monai.metrics import compute_roc_auc
    import torch

    if len(np.unique(labels)) < 2:
        raise ValueError("AUC needs both classes")
    onehot = np.eye(probs.shape[1])[labels]
    return float(compute_roc_auc(torch.as_tensor(probs), torch.as_tensor(onehot), average="macro"))


_METRICS = {
    "accuracy": lambda p, y: float((p.argmax(axis=1) == y).mean()),
    "auc": _auc,
    "nll": lambda p, y: float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()),
    "ece": expected_calibration_error,
}


def _groups(subjects: Sequence | None, n: int) -> tuple[list | None, dict[str, Any]]:
    """Subjects to resample by (``None``: each sample is its own subject) and the card's description of them."""
    by_subject = bool(subjects) and len(subjects) == n and all(s is not None for s in subjects)  # type: ignore[arg-type]
    groups = len(set(subjects)) if by_subject else n  # type: ignore[arg-type]
    out = {
        "samples": int(n),
        "subjects": int(groups) if by_subject else None,
        "resampled_by": "subject" if by_subject else "sample (no subject ids: each sample counts as one person)",
    }
    if groups < FEW_SUBJECTS:
        out["warning"] = (f"only {groups} {'subjects' if by_subject else 'samples'}: a bootstrap over so few cannot give "
                          "a reliable 95% interval (it understates the uncertainty)")
    return (list(subjects) if by_subject else None), out  # type: ignore[arg-type]


def _interval(fn: Any, *arrays: np.ndarray, subjects: list | None, n_resamples: int, seed: int) -> dict[str, Any]:
    try:
        value, low, high = bootstrap_ci(fn, *arrays, subjects=subjects, n_resamples=n_resamples, seed=seed)
    except ValueError:
        value, low, high = float("nan"), float("nan"), float("nan")
    return {"value": value, "ci95": [low, high]}


def _classification_metrics(record: Mapping[str, Any], n_resamples: int, seed: int) -> dict[str, Any]:
    probs = np.asarray(record["probs"], dtype=np.float64)
    labels = np.asarray(record["labels"], dtype=np.int64)
    subjects, out = _groups(record.get("subjects"), len(labels))
    out["task"] = "classification"
    for name, fn in _METRICS.items():
        out[name] = _interval(fn, probs, labels, subjects=subjects, n_resamples=n_resamples, seed=seed)
    return out


def _pooled_dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    denominator = 2.0 * tp.sum() + fp.sum() + fn.sum()
    return 1.0 if denominator == 0 else float(2.0 * tp.sum() / denominator)


def _segmentation_metrics(record: Mapping[str, Any], n_resamples: int, seed: int) -> dict[str, Any]:
    reduction = record.get("reduction", "mean")
    if reduction == "pooled":
        tp, fp, fn = (np.asarray(record[k], dtype=np.float64) for k in ("tp", "fp", "fn"))
        subjects, out = _groups(record.get("subjects"), len(tp))
        out["dice"] = _interval(_pooled_dice, tp, fp, fn, subjects=subjects, n_resamples=n_resamples, seed=seed)
        out["dice_reduction"] = "pooled: 2 sum(TP) / (2 sum(TP) + sum(FP) + sum(FN)) over the images"
    elif reduction == "mean":
        dice = np.asarray(record["dice"], dtype=np.float64)
        subjects, out = _groups(record.get("subjects"), len(dice))
        out["dice"] = _interval(np.mean, dice, subjects=subjects, n_resamples=n_resamples, seed=seed)
        out["dice_reduction"] = "mean of the per-image Dice"
    else:
        raise ValueError(f"model card: unknown segmentation record reduction '{reduction}' (expected pooled or mean).")
    out["task"] = "segmentation"
    return out


def _test_metrics(record: Mapping[str, Any], n_resamples: int, seed: int) -> dict[str, Any]:
    """Metrics with intervals of one model's per-sample record (classification or segmentation)."""
    if "probs" in record:
        return _classification_metrics(record, n_resamples, seed)
    return _segmentation_metrics(record, n_resamples, seed)


def write_segmentation_records(
    results: Mapping[str, Mapping[str, Any]], items: Sequence[Mapping], filepath: str | os.PathLike,
    subject_key: str = "subject",
) -> dict[str, Any]:
    """Store per-image Dice and subjects of :func:`monai_kd.metrics.segmentation.evaluate_checkpoints` results.

    Args:
        results: ``{model name: {"dice_per_image": [...], ...}}``.
        items: the evaluated datalist items, in the evaluated order (their ``subject_key`` names the person).
        filepath: the predictions JSON to create or update (other models kept).
        subject_key: item field naming the subject.

    Returns:
        the records written.
    """
    subjects = [str(i[subject_key]) if subject_key in i else None for i in items]
    path = Path(filepath)
    content = json.loads(path.read_text()) if path.is_file() else {}
    for name, result in results.items():
        dice = list(result["dice_per_image"])
        if len(dice) != len(subjects):
            raise ValueError(f"model card: {len(dice)} per-image Dice values of '{name}' for {len(subjects)} items.")
        content[name] = {"dice": dice, "subjects": subjects, "reduction": "mean"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_paths(path) as (tmp,):
        Path(tmp).write_text(json.dumps(content))
    return content


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"model card: {what} not found: {path} (run the bundle's evaluation first).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"model card: {what} {path} is not valid JSON ({exc.msg}, line {exc.lineno}).") from exc


def data_licence(data_dir: str | os.PathLike | None) -> str | None:
    """The licence statement of a data folder: the paragraph of its ``SOURCE.txt`` (or ``README.md``) naming it.

    Args:
        data_dir: the data folder a bundle was trained on (``None``: not known).

    Returns:
        from the first line starting with "License"/"Licence" (else the first line mentioning one) to the end of
        its paragraph (at most three lines), with the file they come from; ``None`` when no such file or line exists.
    """
    if data_dir is None:
        return None
    for name in ("SOURCE.txt", "README.md", "LICENSE"):
        path = Path(data_dir) / name
        if not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        starts = [i for i, line in enumerate(lines) if re.match(r"\s*licen[cs]es?\b", line, re.IGNORECASE)]
        mentions = [i for i, line in enumerate(lines) if re.search(r"licen[cs]e", line, re.IGNORECASE)]
        if not (starts or mentions):
            continue
        first = (starts or mentions)[0]  # a "License: ..." line, else the first line naming a licence
        chosen = [lines[first].strip()]
        for line in lines[first + 1 : first + 3]:  # its continuation and a citation, not the next field
            if not line.strip() or (re.match(r"\s*[A-Z][\w ]*:", line) and not line.lstrip().startswith("Cite")):
                break
            chosen.append(line.strip())
        return f"{' '.join(chosen)} (from {path})"
    return None


def configuration_metadata(metadata: Mapping[str, Any], configuration: str | None = None) -> dict[str, Any]:
    """A bundle's metadata for one of its configurations (e.g. emtkd's ``classification`` form).

    ``metadata["configurations"][configuration]`` (task, data source, licence, input contract, network data format
    of that form) replaces the top-level keys of the same name; ``None`` gives the default configuration.

    Raises:
        KeyError: the metadata declares no such configuration.
    """
    meta = {k: v for k, v in metadata.items() if k != "configurations"}
    if configuration is None:
        return meta
    forms = metadata.get("configurations", {})
    if configuration not in forms:
        raise KeyError(f"metadata declares no configuration '{configuration}' (has {sorted(forms)}).")
    return {**meta, **forms[configuration], "configuration": configuration}


#: the latency benchmark's output (``scripts/bench_latency.py``), in the repository holding this package
LATENCY_FILE = Path(__file__).resolve().parents[1] / "docs" / "bench_latency.json"


def _latency(latency_file: str | os.PathLike | None, bundle: str) -> dict[str, Any] | str:
    """Median latency (ms, batch 1, one thread) of each model of ``bundle`` from a benchmark JSON, if measured."""
    path = Path(latency_file) if latency_file is not None else LATENCY_FILE
    not_measured = f"not measured (no benchmark record of '{bundle}' in {path}; run scripts/bench_latency.py)"
    if not path.is_file():
        return not_measured
    try:
        bench = json.loads(path.read_text())
    except json.JSONDecodeError:
        return not_measured
    records = [r for r in bench.get("records", []) if r.get("bundle") == bundle and r.get("batch") == 1
               and r.get("threads") == 1]
    if not records:
        return not_measured
    models: dict[str, dict[str, float]] = {}
    for r in records:
        models.setdefault(r["model"], {})[r["runtime"]] = round(1000 * float(r["median_s"]), 3)
    return {
        "source": str(path),
        "machine": bench.get("machine"),
        "busy": bench.get("busy"),
        "setting": "median ms per image, batch 1, 1 thread",
        "median_ms": models,
    }


def build_model_card(
    bundle_root: str | os.PathLike,
    student: str,
    teachers: Sequence[str] = (),
    baselines: Sequence[str] = (),
    splits: Mapping[str, Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    configuration: str | None = None,
    export_files: Sequence[str] = EXPORT_FILES,
    latency_file: str | os.PathLike | None = None,
    bundle_name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    in_channels: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The model card of a bundle's evaluated student, as a dictionary (see the module docstring).

    Args:
        bundle_root: the bundle folder (holding ``configs/metadata.json`` and ``models/``).
        student: the name of the exported student's entry in ``metrics.json`` / ``predictions.json``.
        teachers: names of the teachers' entries, for size and metric comparison.
        baselines: names of other evaluated models shown for comparison (e.g. the student trained without KD).
        splits: split sizes, e.g. from :func:`split_sizes`.
        output_dir: folder of ``metrics.json`` and ``predictions.json``; default ``bundle_root/eval``.
        meta_file: the bundle's metadata file; default ``bundle_root/configs/metadata.json``.
        metadata: the metadata itself (e.g. ``"@_meta_"`` in a bundle config, which holds the ``meta_file`` the run
            was given); used instead of ``meta_file`` when not empty.
        configuration: a non-default configuration declared under the metadata's ``configurations`` (see
            :func:`configuration_metadata`).
        export_files: model files (relative to ``bundle_root``) whose checksums are recorded, where they exist.
        latency_file: benchmark JSON of ``scripts/bench_latency.py``; default the repository's
            ``docs/bench_latency.json``. Without a record of this bundle the card says "not measured".
        bundle_name: the bundle's name in the benchmark records; default the folder name of ``bundle_root``.
        data_dir: the training data folder, whose ``SOURCE.txt`` states the data's licence.
        n_resamples: bootstrap resamples of each interval.
        seed: seed of the bootstrap.
        in_channels: input channels the student was configured with (e.g. ``@in_channels``), when they may differ
            from the metadata's (a colour model); ``None``: as the metadata declares.
        class_names: names of the classes of the data actually used, in label order (e.g. ``@data.class_names``,
            BreastMNIST's when the bundle ran on it); ``None``: as the metadata declares.

    Raises:
        FileNotFoundError: a needed evaluation or metadata file is missing.
        KeyError: ``student`` (or a teacher or baseline) has no entry in the evaluation files.
    """
    root = Path(bundle_root)
    out_dir = Path(output_dir) if output_dir is not None else root / "eval"
    if metadata:
        meta = dict(metadata)
    else:
        meta = _read_json(Path(meta_file) if meta_file is not None else root / "configs" / "metadata.json", "metadata")
    meta = configured_metadata(configuration_metadata(meta, configuration), in_channels, class_names=class_names)
    metrics = _read_json(out_dir / "metrics.json", "metrics file")
    predictions = _read_json(out_dir / "predictions.json", "predictions file")
    models: dict[str, Any] = {}
    roles = {student: "student", **{t: "teacher" for t in teachers}, **{b: "baseline" for b in baselines}}
    for name, role in roles.items():
        if name not in metrics or name not in predictions:
            raise KeyError(
                f"model card: no evaluation of '{name}' in {out_dir} (have metrics for {sorted(metrics)}, "
                f"predictions for {sorted(predictions)})."
            )
        models[name] = {
            "role": role,
            "parameters": metrics[name].get("parameters"),
            "evaluator_metrics": {k: v for k, v in metrics[name].items() if k not in ("parameters", "dice_per_image")},
            "test": _test_metrics(predictions[name], n_resamples, seed),
        }
    task = models[student]["test"]["task"]
    exports = _exports(root, export_files)
    params_t = [models[t]["parameters"] for t in teachers if models[t]["parameters"]]
    params_s = models[student]["parameters"]
    fmt = meta.get("network_data_format", {})
    if task == "classification":
        names = fmt.get("outputs", {}).get("pred", {}).get("channel_def", {})
        positive = names.get("1", "class 1")
        decision = {
            "rule": "argmax of the class probabilities",
            "threshold": 0.5,
            "text": f"predict '{positive}' when its probability is >= 0.5 (two classes: the argmax); no threshold "
            "was tuned on the validation split",
        }
    else:
        decision = {
            "rule": "argmax of the per-pixel class probabilities",
            "threshold": 0.5,
            "text": "a pixel is foreground when its foreground probability is >= 0.5 (two classes: the argmax); "
            "no threshold was tuned",
        }
    return {
        "generated_by": "monai_kd.model_card.write_model_card (generated from the evaluation; do not edit by hand)",
        "bundle": bundle_name or root.name,
        "configuration": meta.get("configuration", "default"),
        "version": meta.get("version"),
        "task": meta.get("task"),
        "intended_use": meta.get("intended_use"),
        "method": meta.get("distillation", {}),
        "training_data": {
            "source": meta.get("data_source"),
            "folder": None if data_dir is None else str(data_dir),
            "splits": dict(splits or {}),
        },
        "licence": {"bundle": meta.get("license"), "training_data": data_licence(data_dir)},
        "models": models,
        "decision_rule": decision,
        "input_contract": {**meta.get("input_contract", {}), "network_input": fmt.get("inputs", {})},
        "outputs": fmt.get("outputs", {}),
        "size": {
            "student_parameters": params_s,
            "teacher_parameters": params_t,
            "teacher_to_student": [round(p / params_s, 1) for p in params_t] if params_s else [],
        },
        "latency": _latency(latency_file, bundle_name or root.name),
        "exports": exports,
        "versions": _versions(),
        "bootstrap": {"resamples": n_resamples, "seed": seed, "level": 0.95, "method": "percentile"},
    }


def _exports(root: Path, export_files: Sequence[str]) -> list[dict[str, Any]]:
    """Name, SHA-256 and size of each existing model file."""
    return [
        {"file": rel, "sha256": sha256(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in export_files
        if (root / rel).is_file()
    ]


def card_version(card: Mapping[str, Any]) -> str:
    """``<bundle version>+card.<first 10 hex digits of the SHA-256 of the card's content>``.

    Any change of the card (a new evaluation, new exports) gives a new version; DICOM outputs name it.
    """
    content = json.dumps({k: v for k, v in card.items() if k != "card_version"}, sort_keys=True, default=float)
    return f"{card.get('version') or '0'}+card.{hashlib.sha256(content.encode()).hexdigest()[:10]}"


def _write(card: dict[str, Any], out_dir: Path) -> None:
    card["card_version"] = card_version(card)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{CARD_NAME}.json", out_dir / f"{CARD_NAME}.md"
    with atomic_paths(json_path, md_path) as (tmp_json, tmp_md):
        Path(tmp_json).write_text(json.dumps(card, indent=2, default=float) + "\n")
        Path(tmp_md).write_text(render_markdown(card))


def refresh_exports(bundle_root: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Re-record the export files' checksums in an existing card (after ``monai-kd export``); ``None`` if no card.

    Args:
        bundle_root: the bundle folder whose ``models/`` holds the exports.
        output_dir: the card's folder; default ``bundle_root/eval``.
    """
    out_dir = Path(output_dir) if output_dir is not None else Path(bundle_root) / "eval"
    card_file = out_dir / f"{CARD_NAME}.json"
    if not card_file.is_file():
        return None
    card = _read_json(card_file, "model card")
    card["exports"] = _exports(Path(bundle_root), EXPORT_FILES)
    _write(card, out_dir)
    return card


def _cell(metric: Mapping[str, Any] | None) -> str:
    if metric is None:
        return "n/a"
    value, (low, high) = metric["value"], metric["ci95"]
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f} (no interval)"


#: metrics with intervals shown per task: (key, column title)
TABLE_METRICS = {
    "classification": (("accuracy", "accuracy"), ("auc", "AUC"), ("nll", "NLL"), ("ece", "ECE")),
    "segmentation": (("dice", "Dice"),),
}


def _classes_line(card: Mapping[str, Any]) -> list[str]:
    """``Classes: 0 = ..., 1 = ...`` of a classifier's card (the data's class names); nothing for a segmentation."""
    pred = (card.get("outputs") or {}).get("pred", {})
    if pred.get("format") not in CLASSIFICATION_FORMATS or not pred.get("channel_def"):
        return []
    return ["Classes: " + ", ".join(f"{k} = {v}" for k, v in pred["channel_def"].items()) + "."]


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown."""
    licence = card.get("licence") or {}
    if not isinstance(licence, Mapping):
        licence = {"bundle": licence, "training_data": None}
    lines = [
        f"# Model card: {card['bundle']} {card.get('version') or ''}".rstrip(),
        "",
        f"_{card['generated_by']}._ Card version `{card.get('card_version')}`; configuration "
        f"`{card.get('configuration', 'default')}`.",
        "",
        f"**Task**: {card.get('task')}  ",
        f"**Intended use**: {card.get('intended_use')}  ",
        f"**Licence (bundle)**: {licence.get('bundle')}  ",
        f"**Licence of the training data**: {licence.get('training_data') or 'see the data source'}",
        "",
        "## Method",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in card["method"].items()] or ["- (not stated in metadata)"]
    data = card["training_data"]
    lines += ["", "## Training data", "", f"Source: {data['source']}" + (f" (folder `{data['folder']}`)" if data.get("folder") else ""), ""]
    splits = data["splits"]
    if splits:
        lines += ["| split | images | subjects |", "|---|---:|---:|"]
        lines += [f"| {n} | {s['images']} | {s['subjects'] if s['subjects'] is not None else 'not recorded'} |" for n, s in splits.items()]
    first = next(iter(card["models"].values()))["test"]
    task = first.get("task", "classification")
    columns = TABLE_METRICS[task]
    lines += ["", "## Test metrics (95% bootstrap confidence intervals)", ""]
    lines += ["| model | role | parameters | samples | subjects | " + " | ".join(c for _, c in columns) + " |",
              "|---|---|---:|---:|---:|" + "---:|" * len(columns)]
    for name, m in card["models"].items():
        t = m["test"]
        params = f"{m['parameters']:,}" if m["parameters"] else "n/a"
        lines.append(
            f"| {name} | {m['role']} | {params} | {t['samples']} | {t['subjects'] or 'n/a'} | "
            + " | ".join(_cell(t.get(k)) for k, _ in columns) + " |"
        )
    b = card["bootstrap"]
    decision = card["decision_rule"]
    decision_text = decision["text"] if isinstance(decision, Mapping) else decision
    lines += [
        "",
        f"Intervals: {b['resamples']} percentile-bootstrap resamples (seed {b['seed']}), resampled by "
        f"{first['resampled_by']}." + (f" Dice: {first['dice_reduction']}." if task == "segmentation" else "")
        + (f" **Warning**: {first['warning']}." if first.get("warning") else ""),
        f"Decision rule: {decision_text}.",
        *_classes_line(card),
        "",
        "## Input contract",
        "",
        "What the student accepts (`configs/metadata.json` `input_contract`; `monai-kd infer-dicom` and `monai-kd "
        "serve` refuse other series unless forced):",
        "",
        "```json",
        json.dumps(card["input_contract"], indent=2),
        "```",
        "",
        "## Size and speed",
        "",
        f"Student parameters: {card['size']['student_parameters']}; teachers: {card['size']['teacher_parameters']} "
        f"({card['size']['teacher_to_student']} x the student).",
        "",
    ]
    latency = card["latency"]
    if isinstance(latency, Mapping):
        runtimes = sorted({rt for per in latency["median_ms"].values() for rt in per})
        lines += [f"Latency ({latency['setting']}; {latency['machine']}" + (", busy machine" if latency.get("busy") else "")
                  + f"; from `{latency['source']}`):", "", "| model | " + " | ".join(runtimes) + " |",
                  "|---|" + "---:|" * len(runtimes)]
        lines += [f"| {m} | " + " | ".join(str(per.get(rt, "n/a")) for rt in runtimes) + " |"
                  for m, per in latency["median_ms"].items()]
    else:
        lines.append(f"Latency: {latency}.")
    lines += ["", "## Exported files", ""]
    if card["exports"]:
        lines += ["| file | bytes | sha256 |", "|---|---:|---|"]
        lines += [f"| {e['file']} | {e['bytes']} | `{e['sha256']}` |" for e in card["exports"]]
    else:
        lines.append("none yet (export the student, then re-write the card)")
    lines += ["", "## Library versions", ""] + [f"- {k} {v}" for k, v in card["versions"].items()]
    return "\n".join(lines) + "\n"


def write_model_card(bundle_root: str | os.PathLike, student: str, **kwargs: Any) -> dict[str, Any]:
    """Build the card (:func:`build_model_card`) and write ``model_card.json`` and ``model_card.md`` atomically.

    Args:
        bundle_root: the bundle folder.
        student: the exported student's evaluation name.
        kwargs: other arguments of :func:`build_model_card` (``output_dir`` is also where the card is written).

    Returns:
        the card.
    """
    card = build_model_card(bundle_root, student, **kwargs)
    _write(card, Path(kwargs.get("output_dir") or Path(bundle_root) / "eval"))
    return card


def verify_model_file(card_file: str | os.PathLike, model_file: str | os.PathLike) -> dict[str, Any]:
    """Check that ``model_file`` is the file the model card recorded (same name, same SHA-256).

    Args:
        card_file: a ``model_card.json``.
        model_file: the model file about to be used.

    Returns:
        the card.

    Raises:
        ValueError: the card records no file of that name, or the checksum differs (the file was altered or
            replaced after the card was written).
    """
    card = _read_json(Path(card_file), "model card")
    name = Path(model_file).name
    recorded = [e for e in card.get("exports", []) if Path(e["file"]).name == name]
    if not recorded:
        raise ValueError(f"model card {card_file} records no model file named {name}; re-write the card after export.")
    actual = sha256(model_file)
    if actual != recorded[0]["sha256"]:
        raise ValueError(
            f"model file {model_file} does not match its model card {card_file} (sha256 {actual[:12]}... instead of "
            f"{recorded[0]['sha256'][:12]}...): refusing a model that is not the one the card describes."
        )
    return card


def card_for_model(model_file: str | os.PathLike, card_file: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The model card describing ``model_file``, checked against it; ``None`` when there is none to check.

    The card is ``card_file`` or, by default, ``eval/model_card.json`` of the bundle folder holding
    ``models/<model_file>``. A card that records a file of this name must record its checksum.

    Args:
        model_file: the model file about to be used.
        card_file: the card; default found beside the model as above.

    Returns:
        the card, or ``None`` when no card exists or it records no file of this name.

    Raises:
        ValueError: the card records the file with another checksum (see :func:`verify_model_file`).
    """
    model = Path(model_file)
    card_path = Path(card_file) if card_file is not None else model.resolve().parent.parent / "eval" / f"{CARD_NAME}.json"
    if not card_path.is_file():
        return None
    card = _read_json(card_path, "model card")
    if not any(Path(e["file"]).name == model.name for e in card.get("exports", [])):
        return None
    return verify_model_file(card_path, model)
