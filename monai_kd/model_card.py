"""Model cards: what an exported student is, generated from the evaluated numbers, never written by hand.

A clinical reviewer asks of an exported model: what was it trained on and how was the data split, how good is it
and how sure is that number, which inputs does it accept, how big and fast is it against its teacher, which files
are the model and have they been altered, under which licence may it be used. :func:`write_model_card` answers
from the files an evaluation leaves (``eval/metrics.json``, ``eval/predictions.json`` written by
:class:`monai_kd.handlers.PredictionWriter`), the bundle's ``configs/metadata.json`` and the exported model files,
and writes ``eval/model_card.json`` and ``eval/model_card.md``. Test metrics carry 95% bootstrap confidence
intervals resampled by subject (person) where subjects are known (:func:`monai_kd.metrics.bootstrap_ci`).

:func:`verify_model_file` checks a model file against the checksum its card recorded, so a deployment can refuse a
model that is not the one the card describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from monai_kd.io.atomic import atomic_paths
from monai_kd.metrics.uncertainty import bootstrap_ci, expected_calibration_error

__all__ = [
    "CARD_NAME",
    "build_model_card",
    "refresh_exports",
    "split_sizes",
    "verify_model_file",
    "write_model_card",
]

CARD_NAME = "model_card"
#: exported files of a bundle's student whose checksums the card records (those that exist)
EXPORT_FILES = ("models/model.pt", "models/model.ts", "models/model.onnx")
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


def _classification_metrics(record: Mapping[str, Any], n_resamples: int, seed: int) -> dict[str, Any]:
    probs = np.asarray(record["probs"], dtype=np.float64)
    labels = np.asarray(record["labels"], dtype=np.int64)
    subjects = record.get("subjects")
    by_subject = bool(subjects) and all(s is not None for s in subjects)
    out: dict[str, Any] = {
        "samples": int(len(labels)),
        "subjects": int(len(set(subjects))) if by_subject else None,
        "resampled_by": "subject" if by_subject else "sample (no subject ids: each sample counts as one person)",
    }
    for name, fn in _METRICS.items():
        try:
            value, low, high = bootstrap_ci(
                fn, probs, labels, subjects=subjects if by_subject else None, n_resamples=n_resamples, seed=seed
            )
        except ValueError:
            value, low, high = float("nan"), float("nan"), float("nan")
        out[name] = {"value": value, "ci95": [low, high]}
    return out


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


def build_model_card(
    bundle_root: str | os.PathLike,
    student: str,
    teachers: Sequence[str] = (),
    baselines: Sequence[str] = (),
    splits: Mapping[str, Mapping[str, Any]] | None = None,
    output_dir: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    export_files: Sequence[str] = EXPORT_FILES,
    latency_file: str | os.PathLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
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
        export_files: model files (relative to ``bundle_root``) whose checksums are recorded, where they exist.
        latency_file: optional JSON of measured latencies to quote (``{model name: {...}}``).
        n_resamples: bootstrap resamples of each interval.
        seed: seed of the bootstrap.

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
            "evaluator_metrics": {k: v for k, v in metrics[name].items() if k != "parameters"},
            "test": _classification_metrics(predictions[name], n_resamples, seed),
        }
    exports = _exports(root, export_files)
    latency = None
    if latency_file is not None and Path(latency_file).is_file():
        latency = json.loads(Path(latency_file).read_text())
    params_t = [models[t]["parameters"] for t in teachers if models[t]["parameters"]]
    params_s = models[student]["parameters"]
    fmt = meta.get("network_data_format", {})
    return {
        "generated_by": "monai_kd.model_card.write_model_card (generated from the evaluation; do not edit by hand)",
        "bundle": root.name,
        "version": meta.get("version"),
        "task": meta.get("task"),
        "intended_use": meta.get("intended_use"),
        "method": meta.get("distillation", {}),
        "training_data": {"source": meta.get("data_source"), "splits": dict(splits or {})},
        "licence": meta.get("license"),
        "models": models,
        "decision_rule": "argmax of the class probabilities (for two classes: predict class 1 when p1 >= 0.5); "
        "no threshold was tuned",
        "input_contract": {"inputs": fmt.get("inputs", {}), **meta.get("input_contract", {})},
        "outputs": fmt.get("outputs", {}),
        "size": {
            "student_parameters": params_s,
            "teacher_parameters": params_t,
            "teacher_to_student": [round(p / params_s, 1) for p in params_t] if params_s else [],
        },
        "latency": latency or "not measured here: latency comes from a benchmark on an idle machine",
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


def _write(card: Mapping[str, Any], out_dir: Path) -> None:
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


def _cell(metric: Mapping[str, Any]) -> str:
    value, (low, high) = metric["value"], metric["ci95"]
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown."""
    lines = [
        f"# Model card: {card['bundle']} {card.get('version') or ''}".rstrip(),
        "",
        f"_{card['generated_by']}._",
        "",
        f"**Task**: {card.get('task')}  ",
        f"**Intended use**: {card.get('intended_use')}  ",
        f"**Licence (code and data)**: {card.get('licence')}",
        "",
        "## Method",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in card["method"].items()] or ["- (not stated in metadata)"]
    lines += ["", "## Training data", "", f"Source: {card['training_data']['source']}", ""]
    splits = card["training_data"]["splits"]
    if splits:
        lines += ["| split | images | subjects |", "|---|---:|---:|"]
        lines += [f"| {n} | {s['images']} | {s['subjects'] if s['subjects'] is not None else 'not recorded'} |" for n, s in splits.items()]
    lines += ["", "## Test metrics (95% bootstrap confidence intervals)", ""]
    lines += ["| model | role | parameters | samples | subjects | accuracy | AUC | NLL | ECE |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in card["models"].items():
        t = m["test"]
        lines.append(
            f"| {name} | {m['role']} | {m['parameters'] or 'n/a':,} | {t['samples']} | {t['subjects'] or 'n/a'} | "
            f"{_cell(t['accuracy'])} | {_cell(t['auc'])} | {_cell(t['nll'])} | {_cell(t['ece'])} |"
        )
    first = next(iter(card["models"].values()))["test"]
    b = card["bootstrap"]
    lines += [
        "",
        f"Intervals: {b['resamples']} percentile-bootstrap resamples (seed {b['seed']}), resampled by "
        f"{first['resampled_by']}. Decision rule: {card['decision_rule']}.",
        "",
        "## Input contract",
        "",
        "```json",
        json.dumps(card["input_contract"], indent=2),
        "```",
        "",
        "## Size and speed",
        "",
        f"Student parameters: {card['size']['student_parameters']}; teachers: {card['size']['teacher_parameters']} "
        f"({card['size']['teacher_to_student']} x the student). Latency: {card['latency']}",
        "",
        "## Exported files",
        "",
    ]
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
