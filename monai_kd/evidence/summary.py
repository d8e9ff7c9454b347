# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""What ``monai-kd results BUNDLE`` prints: each bundle's evidence, mean ± std per method and paired differences.

An :class:`EvidenceSpec` says how to read a bundle's ``docs/results.json`` records (which table a record belongs
to, which method it is, its metric values) and which comparisons its protocol makes (method vs baseline, same
seed). The evidence scripts use the same specs and :func:`paired` for the intervals of their README tables, so
the intervals printed here and those in the READMEs are the same numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_kd.evidence.report import CI_HEADER, CI_METHOD, ci, mean_std, signed_mean_std
from monai_kd.evidence.stats import PairedDifference, paired_difference

__all__ = ["SPECS", "EvidenceSpec", "paired", "render_summary", "resolve_results"]


def _get(record: dict, metric: str) -> float | None:
    value = record.get(metric)
    return None if value is None else float(value)


@dataclass(frozen=True)
class EvidenceSpec:
    """How a bundle's evidence records are grouped, named and compared.

    Args:
        group: the table (dataset / benchmark / task ...) of a record.
        arm: the row (method) of a record; ``None`` leaves the record out.
        metrics: the metrics of a table, by group name.
        pairs: ``(method, baseline)`` comparisons of a table, given its group and the arms it holds.
        value: a metric's value in a record.
        order: preferred row order (other arms follow, sorted).
        scale: factor of the printed values (100: percent).
        digits: decimals.
    """

    group: Callable[[dict], str]
    arm: Callable[[dict], str | None]
    metrics: Callable[[str], tuple[str, ...]]
    pairs: Callable[[str, list[str]], list[tuple[str, str]]]
    value: Callable[[dict, str], float | None] = _get
    order: tuple[str, ...] = field(default_factory=tuple)
    scale: float = 1.0
    digits: int = 3

    def by_seed(self, runs: list[dict], group: str, arm: str, metric: str) -> dict[Any, float | None]:
        """seed -> value of ``metric`` for one arm of one table."""
        return {r["seed"]: self.value(r, metric) for r in runs if self.group(r) == group and self.arm(r) == arm}

    def arms(self, runs: list[dict], group: str) -> list[str]:
        """The rows of a table in protocol order."""
        found = {self.arm(r) for r in runs if self.group(r) == group} - {None}
        return [a for a in self.order if a in found] + sorted(found - set(self.order))  # type: ignore[type-var]


def paired(spec: EvidenceSpec, runs: list[dict], group: str, arm: str, baseline: str, metric: str) -> PairedDifference:
    """Per-seed differences ``arm - baseline`` of ``metric`` in one table, with their t-interval."""
    return paired_difference(spec.by_seed(runs, group, arm, metric), spec.by_seed(runs, group, baseline, metric))


# ------------------------------------------------------------------------------------------- the bundles' specs

EMTKD_OTHERS = ("uniform_mtkd", "student_alone", "camkd", "emtkd_no_da", "emtkd_no_weighting", "emtkd_no_ssl")
KDML_NAMES = {"ml": "ML", "kd_on": "KD (on)", "kd_off": "KD (off)", "kd_ml": "KD + ML"}
KDML_BASELINES = ("KD (off) V1", "KD (on) V1", "ML V1", "KD + ML V1")
WECKD_BASELINES = ("single_backbone_same_data", "one_step_kd", "single_backbone_union")


def emtkd_arm(record: dict) -> str:
    """The table row of an EMTKD record (``teacher_direct`` split by teacher and adaptation)."""
    if record["method"] != "teacher_direct":
        return record["method"]
    return f"teacher_direct: {record['teacher']} ({'DANN' if record['domain_adaptation'] else 'source only'})"


def kdml_arm(record: dict) -> str:
    """The table row of a KD + ML record: ``teacher``, ``student alone`` or ``<regime> <variant>``."""
    if record["variant"] is None:
        return record["regime"].replace("_", " ")
    return f"{KDML_NAMES.get(record['regime'], record['regime'])} {record['variant']}"


def _present(arm: str, baselines: tuple[str, ...], arms: list[str]) -> list[tuple[str, str]]:
    return [(arm, b) for b in baselines if arm in arms and b in arms]


def _against(baseline: str) -> Callable[[str, list[str]], list[tuple[str, str]]]:
    return lambda group, arms: [(a, baseline) for a in arms if a != baseline and baseline in arms]


SPECS: dict[str, EvidenceSpec] = {
    "kd": EvidenceSpec(
        group=lambda r: r["dataset"], arm=lambda r: r["model"], metrics=lambda g: ("accuracy", "auc"),
        pairs=lambda g, arms: _present("student_kd", ("student_alone", "teacher"), arms),
        order=("teacher", "student_alone", "student_kd"),
    ),
    "emtkd": EvidenceSpec(
        group=lambda r: r["benchmark"], arm=emtkd_arm,
        metrics=lambda g: ("dice", "auc") if g == "retinal" else ("accuracy", "auc"),
        pairs=lambda g, arms: _present("emtkd", EMTKD_OTHERS, arms),
        order=("student_alone", "teacher_direct: teacher_a (DANN)", "teacher_direct: teacher_b (DANN)",
               "teacher_direct: teacher_a (source only)", "teacher_direct: teacher_b (source only)",
               "single_teacher_kd", "uniform_mtkd", "camkd", "emtkd", "emtkd_no_da", "emtkd_no_weighting",
               "emtkd_no_ssl", "student_all_target_labels"),
    ),
    "kdml": EvidenceSpec(
        group=lambda r: r["task"], arm=kdml_arm,
        metrics=lambda g: ("accuracy", "auc") if g == "classification" else ("dice", "iou"),
        pairs=lambda g, arms: _present("KD + ML V3", KDML_BASELINES, arms),
        value=lambda r, m: _get(r["metrics"]["ensemble"], m),
        order=("teacher", "student alone", *(f"{n} {v}" for n in KDML_NAMES.values() for v in ("V1", "V2", "V3"))),
        scale=100.0, digits=2,
    ),
    "mmkd": EvidenceSpec(
        group=lambda r: f"{r['dataset']} / {r['student']} student", arm=lambda r: r["method"],
        metrics=lambda g: ("auc", "accuracy"), pairs=_against("student_alone"),
        order=("student_alone", "uniform", "camkd", "gate", "mmkd_logits", "mmkd_logits_features"),
    ),
    "weckd": EvidenceSpec(
        group=lambda r: f"{r['dataset']} / {r['fraction']:.0%} per link",
        arm=lambda r: f"chain (link {r['link']})" if r["method"] == "chain" else r["method"],
        metrics=lambda g: ("accuracy", "auc"),
        pairs=lambda g, arms: _present("chain (link 3)", WECKD_BASELINES, arms),
        order=("chain (link 1)", "chain (link 2)", "chain (link 3)", *WECKD_BASELINES),
    ),
}
SPECS["kdml_cls"] = SPECS["kdml_seg"] = SPECS["kdml"]


def _generic(key: str) -> EvidenceSpec:
    """Spec of a bundle without its own: tables by ``dataset`` / ``benchmark``, rows by ``key``, vs ``student_alone``."""
    return EvidenceSpec(group=lambda r: str(r.get("dataset", r.get("benchmark", ""))), arm=lambda r: r.get(key),
                        metrics=lambda g: ("accuracy", "auc"), pairs=_against("student_alone"))


def render_summary(spec: EvidenceSpec, results: dict[str, Any], title: str = "") -> str:
    """Markdown: per table, mean ± std over seeds of every method, then the paired differences with 95% CIs."""
    runs = results.get("runs", [])
    if not runs:
        return f"{title}: no run records yet." if title else "No run records yet."
    scale, digits = spec.scale, spec.digits
    lines = [f"## {title}", ""] if title else []
    groups = sorted({spec.group(r) for r in runs if spec.arm(r) is not None}, key=str)
    for group in groups:
        metrics, arms = spec.metrics(group), spec.arms(runs, group)
        seeds = sorted({r["seed"] for r in runs if spec.group(r) == group})
        unit = " (%)" if scale == 100.0 else ""
        lines += [f"### {group} ({len(seeds)} seed(s): {seeds}){unit}", "",
                  "| method | n | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
        for arm in arms:
            cells = [mean_std(list(spec.by_seed(runs, group, arm, m).values()), digits, scale, single="note")
                     for m in metrics]
            n = sum(1 for r in runs if spec.group(r) == group and spec.arm(r) == arm)
            lines.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
        pairs = spec.pairs(group, arms)
        if pairs:
            head = " | ".join(f"Δ {m} (higher on) | {m} {CI_HEADER}" for m in metrics)
            lines += ["", "Paired by seed (same seed: same initial weights, data order and split):", "",
                      f"| method − baseline | seeds | {head} |", "|---|---:|" + "---:|---:|" * len(metrics)]
            for arm, baseline in pairs:
                cells, n = [], 0
                for m in metrics:
                    diff = paired(spec, runs, group, arm, baseline, m)
                    n = max(n, diff.n)
                    gain = signed_mean_std([scale * d for d in diff.differences], digits) if diff.n else "–"
                    cells += [f"{gain} ({diff.wins}/{diff.n})", ci(diff, digits, scale)]
                lines.append(f"| {arm} − {baseline} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(CI_METHOD + ".")
    return "\n".join(lines)


def resolve_results(bundle: str | os.PathLike) -> tuple[str, Path]:
    """The bundle's name and its ``docs/results.json``: ``bundle`` is a folder or the name of a bundle of this repo.

    Raises:
        FileNotFoundError: no such bundle, or it has no recorded evidence, named with the path looked at.
    """
    folder = Path(bundle)
    if not (folder / "configs").is_dir() and not folder.is_absolute() and len(folder.parts) == 1:
        shipped = Path(__file__).resolve().parents[2] / "bundles" / folder.name
        if (shipped / "configs").is_dir():
            folder = shipped
    if not (folder / "configs").is_dir():
        raise FileNotFoundError(f"'{bundle}' is not a bundle folder or a bundle name of this repository (e.g. kd).")
    path = folder / "docs" / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"bundle '{folder.name}' has no recorded evidence: {path} does not exist.")
    return folder.resolve().name, path


def summary(bundle: str | os.PathLike, key: str = "model") -> str:
    """:func:`render_summary` of a bundle's ``docs/results.json`` (its own spec, else by ``key``)."""
    name, path = resolve_results(bundle)
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid results file ({e}).") from e
    spec = SPECS.get(name) or _generic(key)
    return render_summary(spec, results, title=f"{name}: {path}")
