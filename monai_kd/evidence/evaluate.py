# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Evaluating the models of an evidence run: through the bundle's own ``evaluate.json``, or in-process scores.

:func:`evaluate_bundle` runs ``[train.json, evaluate.json]`` of a bundle into a run folder, exactly as
``monai-kd evaluate`` does (or another run id of it, e.g. ``run_checkpoint`` for one checkpoint file), and returns the
metrics file it wrote; the kd, kdml, weckd, emtkd and mmkd evidence score their models this way (accuracy, ROC AUC,
validation NLL, ECE, Dice from the bundles' own metrics). :func:`classification_scores` gives the same
classification scores from logits in-process, for the tests that check the bundles' numbers against it;
:func:`int8_classification_scores` scores a classifier and the int8 model quantised from it side by side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from monai_kd.evidence.stages import run_bundle

__all__ = ["classification_scores", "evaluate_bundle", "int8_classification_scores", "predict_logits"]


def evaluate_bundle(
    config_file: list[str | os.PathLike],
    bundle_root: str | os.PathLike,
    metrics_file: str = "metrics.json",
    run_id: str = "run",
    **override: Any,
) -> dict[str, Any]:
    """Run the bundle's evaluation (``run`` of ``[train.json, evaluate.json]``) and return its metrics JSON.

    Args:
        config_file: the bundle's ``train.json`` and ``evaluate.json`` (and any config layered on them).
        bundle_root: the run folder holding ``models/``; the evaluation writes ``eval/`` there.
        metrics_file: the file under ``bundle_root/eval`` the evaluation writes (e.g. ``val_metrics.json`` for
            ``eval_split=val``).
        run_id: the evaluation's run id (e.g. weckd's ``run_checkpoint``, one checkpoint file).
        override: config overrides and ``monai.bundle.run`` arguments (``meta_file``, ``eval_split``, ...).

    Raises:
        FileNotFoundError: the evaluation did not write ``metrics_file``, named with its path.
    """
    run_bundle(run_id, list(config_file), bundle_root, **override)
    path = Path(bundle_root) / "eval" / metrics_file
    if not path.is_file():
        raise FileNotFoundError(f"the bundle's evaluation wrote no {path}.")
    return json.loads(path.read_text())


def predict_logits(net: Any, x: Any, batch_size: int = 256) -> Any:
    """Logits of ``net`` (in eval mode, no gradients) on the images ``x``, by batches, as float32."""
    import torch

    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).float()


def classification_scores(logits: Any, labels: Any, ece: bool = False) -> dict[str, float]:
    """Accuracy, one-vs-rest ROC AUC (MONAI), negative log-likelihood and optionally the top-1 ECE (10 bins).

    Args:
        logits: ``(N, C)`` tensor.
        labels: ``(N,)`` class indices.
        ece: also ``ece`` (:func:`monai_kd.metrics.uncertainty.expected_calibration_error`).
    """
    import torch
    from monai.metrics import compute_roc_auc

    from monai_kd.metrics.uncertainty import expected_calibration_error

    labels = torch.as_tensor(labels).long().reshape(-1)
    probs = logits.float().softmax(dim=1)
    scores = {
        "accuracy": (probs.argmax(dim=1) == labels).float().mean().item(),
        "auc": float(compute_roc_auc(probs, torch.nn.functional.one_hot(labels, probs.shape[1]))),
        "nll": torch.nn.functional.cross_entropy(logits.float(), labels).item(),
    }
    if ece:
        scores["ece"] = expected_calibration_error(probs.numpy(), labels.numpy())
    return scores


def int8_classification_scores(
    net: Any, images: Any, labels: Any, calibration: Any, folder: str | os.PathLike, threads: int = 1
) -> dict[str, float]:
    """Scores of a float classifier and of the int8 model a user deploys from it, by the same code.

    ``net`` is exported to ONNX (:func:`monai_kd.quantization.export_onnx`) and quantised by ONNX Runtime
    (:func:`monai_kd.quantization.quantize_onnx`: static, QDQ, per-channel int8 weights), its activation ranges set
    on ``calibration``; both are run on ``images`` (the float network in PyTorch) and scored by
    :func:`classification_scores`.

    Args:
        net: the float classifier (eval mode is set).
        images: ``(N, C, *spatial)`` tensor of the evaluation images.
        labels: ``(N,)`` class indices.
        calibration: training images (``(M, C, *spatial)`` float32 array) for the activation ranges, e.g. from
            :func:`monai_kd.quantization.bundle_calibration_images`.
        folder: where ``model.onnx`` and ``model_int8.onnx`` are written.
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``fp32_accuracy``, ``fp32_auc``, ``fp32_test_nll``, the int8 model's ``accuracy``, ``auc``, ``test_nll``,
        and ``agreement``: the fraction of images on which both predict the same class.
    """
    from monai_kd.quantization import OnnxNetwork, export_onnx, quantize_onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fp32_path = export_onnx(net.eval(), tuple(images.shape[1:]), folder / "model.onnx")
    int8 = OnnxNetwork(quantize_onnx(fp32_path, folder / "model_int8.onnx", calibration), threads=threads)
    fp32_logits, int8_logits = predict_logits(net, images), predict_logits(int8, images)
    fp32, quant = classification_scores(fp32_logits, labels), classification_scores(int8_logits, labels)
    return {"fp32_accuracy": fp32["accuracy"], "fp32_auc": fp32["auc"], "fp32_test_nll": fp32["nll"],
            "accuracy": quant["accuracy"], "auc": quant["auc"], "test_nll": quant["nll"],
            "agreement": (fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean().item()}
