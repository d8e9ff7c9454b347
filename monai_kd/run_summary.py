"""The closing summary of ``monai-kd run`` / ``train`` / ``evaluate``, and quiet third-party logs.

A run ends with its result: :func:`summary_table` renders, for every model, its parameters and test metrics with
their 95% intervals (from the model card, :mod:`monai_kd.model_card`, else ``eval/metrics.json``), then the files
written and where. The CLI prints it as the last thing of the command. :func:`quiet_third_party` keeps the ONNX
exporter, onnxscript and deprecation warnings off the screen unless ``--verbose`` is given; MONAI's own progress
bars and stage logs are left as they are.

This module imports neither torch nor MONAI (the summary of a training reads parameter counts with torch only when
it is already imported).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["QUIET_LOGGERS", "quiet_third_party", "summary_table"]

#: loggers of the exporters and libraries that flood the end of a run at INFO level
QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch._export", "torch.fx", "onnxscript", "onnx_ir",
                 "onnx", "onnxruntime", "torch.utils._sympy", "torch._inductor", "highdicom", "pydicom")
#: modules whose warnings are third-party noise for a user of the CLI
QUIET_WARNING_MODULES = r"(torch\.onnx|torch\.jit|torch\.export|torch\._dynamo|torch\.fx|onnxscript|onnx_ir|onnx)(\..*)?"
#: metrics shown per task: (key in the card, column title)
COLUMNS = {
    "classification": (("accuracy", "accuracy"), ("auc", "AUC"), ("ece", "ECE")),
    "segmentation": (("dice", "Dice"),),
}


def quiet_third_party(verbose: bool = False) -> None:
    """Silence exporter loggers (below WARNING) and deprecation / exporter warnings, unless ``verbose``.

    Idempotent; call again after something reconfigures logging (MONAI's bundle ``run`` applies ``logging.conf``).
    """
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", module=QUIET_WARNING_MODULES)
    warnings.filterwarnings("ignore", message=r".*(TracerWarning|onnx|ONNX|dynamo|torch\.export).*")
    if "torch" in sys.modules:  # TracerWarnings have their own category; never import torch just for this
        from torch.jit import TracerWarning

        warnings.filterwarnings("ignore", category=TracerWarning)


def _cell(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "n/a" if metric is None else f"{float(metric):.3f}"
    value, (low, high) = metric.get("value"), metric.get("ci95", [None, None])
    if value is None or value != value:
        return "n/a"
    if low is None or low != low:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _state_dict_parameters(path: Path) -> int | None:
    """Learnable values in a checkpoint (floating tensors, BatchNorm statistics excluded), if torch is loaded."""
    if "torch" not in sys.modules:
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        return None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        return None
    skip = ("running_mean", "running_var", "num_batches_tracked")
    tensors = [v for k, v in state.items() if isinstance(v, torch.Tensor) and not str(k).endswith(skip)]
    return int(sum(v.numel() for v in tensors if v.is_floating_point())) if tensors else None


def _files(root: Path, names: Sequence[str]) -> list[str]:
    lines = []
    for folder in names:
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(p for p in base.iterdir() if p.is_file()):
            size = path.stat().st_size
            human = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
            lines.append(f"  {path} ({human})")
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]


def summary_table(
    bundle_root: str | os.PathLike,
    command: str = "run",
    output_dir: str | os.PathLike | None = None,
    extra_files: Sequence[str | os.PathLike] = (),
) -> str:
    """The closing summary of a command on a bundle: models, their size and test metrics with intervals, files.

    Args:
        bundle_root: the bundle folder the command wrote to.
        command: ``run``, ``train`` or ``evaluate`` (a training lists checkpoints, not test metrics).
        output_dir: the evaluation folder; default ``bundle_root/eval``.
        extra_files: other files the command wrote (e.g. exports outside ``models/``).

    Returns:
        the summary text (no trailing newline).
    """
    root = Path(bundle_root)
    out_dir = Path(output_dir) if output_dir is not None else root / "eval"
    lines = [f"== monai-kd {command} {root}: summary =="]
    card_file, metrics_file = out_dir / "model_card.json", out_dir / "metrics.json"
    card = metrics = None
    if command != "train":
        try:
            card = json.loads(card_file.read_text()) if card_file.is_file() else None
        except json.JSONDecodeError:
            card = None
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        except json.JSONDecodeError:
            metrics = None
    if card:
        models = card["models"]
        task = next(iter(models.values()))["test"].get("task", "classification")
        columns = COLUMNS[task]
        header = ["model", "role", "parameters", "test n", *[title for _, title in columns]]
        rows = [[name, m["role"], f"{m['parameters']:,}" if m.get("parameters") else "n/a",
                 str(m["test"]["samples"]), *[_cell(m["test"].get(key)) for key, _ in columns]]
                for name, m in models.items()]
        lines += _table(header, rows)
        first = next(iter(models.values()))["test"]
        lines.append(f"[95% bootstrap intervals, resampled by {first['resampled_by'].split(' (')[0]}; "
                     f"model card version {card.get('card_version')}]")
        if first.get("warning"):
            lines.append(f"[warning: {first['warning']}]")
        others = [n for n in (metrics or {}) if n not in models]
        if others:
            lines.append("also evaluated (eval/metrics.json, no interval): " + ", ".join(others))
    elif metrics:
        keys = sorted({k for m in metrics.values() for k, v in m.items() if isinstance(v, (int, float))} - {"parameters"})
        header = ["model", "parameters", *keys]
        rows = [[name, f"{m['parameters']:,}" if m.get("parameters") else "n/a", *[_cell(m.get(k)) for k in keys]]
                for name, m in metrics.items()]
        lines += _table(header, rows) + ["[no model card: no intervals]"]
    else:
        checkpoints = sorted((root / "models").glob("*.pt")) if (root / "models").is_dir() else []
        if checkpoints:
            rows = []
            for path in checkpoints:
                params = _state_dict_parameters(path)
                rows.append([path.stem, f"{params:,}" if params else "n/a"])
            lines += _table(["checkpoint", "parameters"], rows)
            if command == "train":
                lines.append("[test metrics: run `monai-kd evaluate` on this bundle]")
        else:
            lines.append("no model written")
    lines.append("files:")
    lines += _files(root, ["models"]) + _files(out_dir, ["."])
    lines += [f"  {p}" for p in extra_files]
    if card_file.is_file() and command != "train":
        lines.append(f"model card: {out_dir / 'model_card.md'}")
    return "\n".join(lines)
