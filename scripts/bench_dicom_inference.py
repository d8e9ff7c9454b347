#!/usr/bin/env python
"""Benchmark DICOM-in/DICOM-out inference on the real CT series: seconds per stage, teacher vs student.

    OMP_NUM_THREADS=1 python scripts/bench_dicom_inference.py [--repeats 5] [--bundles kd,kdml_seg]
        [--weights kd=PATH] [--teacher kd=PATH] [--deploy auto|skip] [--no_process]

For each bundle (``kd``; ``kdml_seg`` when it exists) and each of its two networks -- the student
(``network_def`` of ``inference.json``) and the teacher (``teacher_def`` of ``train.json``, run through a copy of
the bundle whose ``network_def`` is the teacher's) -- the CT series
``../shared/data/totalsegmentator-examples/example_ct_dicom`` (20 JPEG 2000 slices) goes through:

- ``monai-kd infer-dicom`` in-process (:func:`monai_kd.dicom_inference.infer_dicom` with ``timings``): read
  (series scan, JPEG 2000 decoding, the bundle's ``LoadImaged``), preprocess, model load, inference,
  postprocess, write (DICOM SR + JSON, or SEG), and the total; median over ``--repeats`` runs after one warm-up;
- the same command as a new process (``python -m monai_kd.cli infer-dicom``): wall seconds including Python
  start-up and imports (skip with ``--no_process``);
- the MONAI Deploy example application (``scripts/deploy/app.py`` in ``.venv-deploy``, on the TorchScript
  export of the same weights) when that virtualenv exists: its stage seconds and the process wall seconds.

Weights: ``--weights``/``--teacher NAME=PATH``, else the bundle's ``models/model.pt`` / ``models/teacher.pt``,
else freshly initialised (seed 0) -- the timings do not depend on the weight values.

Writes ``scripts/_work/bench_dicom_inference.json`` and a Markdown table to stdout and to the ``dicom-inference``
section of ``docs/bench_dicom_inference.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from monai_kd.reporting import write_section

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data"))
CT = DATA / "totalsegmentator-examples" / "example_ct_dicom"
DEPLOY_PYTHON = REPO / ".venv-deploy" / "bin" / "python"
DEPLOY_APP = REPO / "scripts" / "deploy" / "app.py"
OUT_JSON = REPO / "scripts" / "_work" / "bench_dicom_inference.json"
OUT_MD = REPO / "docs" / "bench_dicom_inference.md"
SECTION = "dicom-inference"  # generated section of OUT_MD (the node load benchmark writes another one)
STAGES = ("read", "preprocess", "model_load", "inference", "postprocess", "write")


def _json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _with_references(config: dict, source: dict, value: Any) -> None:
    """Copy into ``config`` every ``@name`` that ``value`` refers to (transitively) and ``config`` lacks."""
    pending = set(re.findall(r"@(\w+)", json.dumps(value)))
    while pending:
        name = pending.pop()
        if name not in config and name in source:
            config[name] = source[name]
            pending |= set(re.findall(r"@(\w+)", json.dumps(source[name])))


def _fresh(config: dict, key: str, bundle_root: Path, path: Path) -> Path:
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    parser["bundle_root"] = str(bundle_root)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content(key).state_dict(), path)
    return path


def _param_count(bundle: Path) -> int:
    from monai.bundle import ConfigParser

    parser = ConfigParser(_json(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())


def prepare(name: str, work: Path, weights: dict[str, str], teachers: dict[str, str]) -> list[dict]:
    """The student and teacher variants of a bundle: ``{"model", "bundle", "ckpt", "weights", "params"}``."""
    src = REPO / "bundles" / name
    inference, train = _json(src / "configs" / "inference.json"), _json(src / "configs" / "train.json")
    variants = []
    for model, key, given, own in (
        ("student", "network_def", weights.get(name), src / "models" / "model.pt"),
        ("teacher", "teacher_def", teachers.get(name), src / "models" / "teacher.pt"),
    ):
        if key not in (inference if model == "student" else train):
            continue
        bundle = work / f"{name}_{model}"
        shutil.copytree(src / "configs", bundle / "configs")
        if model == "teacher":  # the bundle with the teacher as its network_def
            config = dict(inference)
            config["network_def"] = train["teacher_def"]
            _with_references(config, train, train["teacher_def"])
            (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
            meta = _json(src / "configs" / "metadata.json")
            meta["name"] = f"{meta.get('name') or name}_teacher"
            (bundle / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
        (bundle / "models").mkdir()
        if given:
            shown = Path(given).relative_to(REPO) if Path(given).is_relative_to(REPO) else given
            ckpt, origin = Path(given), f"trained: {shown}"
        elif own.is_file():
            ckpt, origin = own, f"trained: {own.relative_to(REPO)}"
        else:
            ckpt = _fresh(_json(bundle / "configs" / "inference.json"), "network_def", bundle, bundle / "models" / "fresh.pt")
            origin = "freshly initialised (seed 0)"
        variants.append({"bundle_name": name, "model": model, "bundle": bundle, "ckpt": ckpt, "weights": origin,
                         "params": _param_count(bundle)})
    return variants


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def bench_in_process(v: dict, repeats: int, work: Path) -> dict:
    """``infer_dicom`` with ``timings``, one warm-up plus ``repeats`` runs."""
    from monai_kd.dicom_inference import infer_dicom

    runs = []
    for k in range(repeats + 1):
        timings: dict = {}
        out = work / f"out_{v['bundle_name']}_{v['model']}_{k}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = infer_dicom(str(v["bundle"]), str(CT), str(out), modality="CT", ckpt_file=str(v["ckpt"]), force=True,
                                  timings=timings)
        if k:
            runs.append(timings)
        shutil.rmtree(out, ignore_errors=True)
    result = {key: _median(runs, key) for key in (*STAGES, "total")}
    totals = [r["total"] for r in runs]
    return {**result, "min_total": min(totals), "max_total": max(totals), "runs": runs,
            "outputs": [Path(p).name.split(".", 1)[1] for p in written]}


def bench_cli_process(v: dict, repeats: int, work: Path) -> dict:
    """``python -m monai_kd.cli infer-dicom`` as a new process: wall seconds."""
    walls = []
    for k in range(repeats + 1):
        out = work / f"cli_{v['bundle_name']}_{v['model']}_{k}"
        cmd = [sys.executable, "-m", "monai_kd.cli", "infer-dicom", "--bundle", str(v["bundle"]), "--input", str(CT),
               "--output", str(out), "--modality", "CT", "--ckpt_file", str(v["ckpt"]), "--force"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, timeout=1800)
        if k:
            walls.append(time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)
    return {"wall": statistics.median(walls), "min_wall": min(walls), "max_wall": max(walls), "walls": walls}


def bench_deploy(v: dict, repeats: int, work: Path) -> dict:
    """The MONAI Deploy example app on the TorchScript export: stage seconds (in-app) and process wall seconds."""
    from monai_kd.cli import export

    model_dir = work / f"ts_{v['bundle_name']}_{v['model']}"
    export(str(v["bundle"]), onnx=False, ckpt_file=str(v["ckpt"]), output_dir=str(model_dir))
    runs, walls = [], []
    for k in range(repeats + 1):
        out, timings = work / f"deploy_{v['bundle_name']}_{v['model']}_{k}", work / f"deploy_t{k}.json"
        cmd = [str(DEPLOY_PYTHON), str(DEPLOY_APP), "-i", str(CT), "-o", str(out), "-m", str(model_dir / "model.ts"),
               "--modality", "CT", "--timings", str(timings), "-w", str(work / "deploy_workdir")]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=1800, check=False)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"deploy app exited {result.returncode}: {(result.stdout + result.stderr)[-1500:]}")
        if k:
            runs.append(_json(timings))
            walls.append(wall)
        outputs = sorted(p.suffix for p in out.iterdir()) if out.is_dir() else []
        shutil.rmtree(out, ignore_errors=True)
    summary = {key: _median(runs, key) for key in (*STAGES, "total")}
    return {**summary, "wall": statistics.median(walls), "min_wall": min(walls), "max_wall": max(walls),
            "runs": runs, "walls": walls, "outputs": outputs}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _short(error: str, limit: int = 150) -> str:
    """An error message for a table cell (the JSON keeps it whole); file paths dropped."""
    error = re.sub(r"'/[^']*'", "the input", error)
    return error if len(error) <= limit else error[: limit - 1] + "…"


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"Real CT series `{report['input']['path']}` ({report['input']['slices']} slices "
        f"{report['input']['shape']}, {report['input']['transfer_syntax']}), selected with `--modality CT`. "
        f"Median of {report['repeats']} runs after one warm-up, seconds. Machine: {env['cpu_count']} CPUs, "
        f"OMP_NUM_THREADS={env['omp_num_threads']}, torch threads {env['torch_threads']}, Python {env['python']}, "
        f"torch {env['torch']}, MONAI {env['monai']}; generated {report['date']} by "
        "`scripts/bench_dicom_inference.py`.",
        "",
        "| bundle | model | params | path | read | preprocess | model load | inference | postprocess | write "
        "| end-to-end (in-process) | process wall |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        head = f"| {row['bundle']} | {row['model']} | {row['params']:,} "
        ip = row.get("infer_dicom")
        if ip and "error" not in ip:
            cli = row.get("infer_dicom_process") or {}
            wall = _fmt(cli.get("wall")) if cli and "error" not in cli else "–"
            lines.append(head + "| `monai-kd infer-dicom` | " + " | ".join(_fmt(ip[s]) for s in STAGES)
                         + f" | {_fmt(ip['total'])} ({_fmt(ip['min_total'])}–{_fmt(ip['max_total'])}) | {wall} |")
        elif ip:
            lines.append(head + f"| `monai-kd infer-dicom` | refused: {_short(ip['error'])} " + "| – " * 7 + "|")
        dp = row.get("deploy")
        if dp and "error" not in dp:
            lines.append(head + "| MONAI Deploy app | " + " | ".join(_fmt(dp.get(s)) for s in STAGES)
                         + f" | {_fmt(dp['total'])} | {_fmt(dp['wall'])} ({_fmt(dp['min_wall'])}–{_fmt(dp['max_wall'])}) |")
        elif dp:
            lines.append(head + f"| MONAI Deploy app | failed: {_short(dp['error'])} " + "| – " * 7 + "|")
    lines += [
        "",
        "Stages: *read* = series scan, JPEG 2000 decoding and the bundle's `LoadImaged` (Deploy: DICOM loader, "
        "series selector, series-to-volume operators); *preprocess* = the rest of the bundle's preprocessing; "
        "*model load* = config parsing and weights (Deploy: TorchScript loading, input/output conversion in the "
        "SDK's bundle operator); *inference* = the bundle's inferer; *postprocess* = the bundle's postprocessing; "
        "*write* = building and writing the outputs (DICOM SR + JSON for classification, DICOM SEG for "
        "segmentation). *End-to-end (in-process)* is the whole call (`infer_dicom`, or the Deploy app's `run()`), "
        "*process wall* a new process including Python start-up and imports (Deploy: also Holoscan). Each Deploy "
        "run is a new process, so its *inference* includes TorchScript's first-call optimisation, and the "
        "TorchScript file is loaded while the app is composed (in *end-to-end*, not in a stage).",
        "",
        "Weights: " + "; ".join(f"{r['bundle']} {r['model']}: {r['weights']}" for r in report["results"]) + ".",
    ]
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def _pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, _, path = value.partition("=")
        if not Path(path).is_file():
            raise SystemExit(f"bench_dicom_inference.py: error: not a file: {path}")
        out[name] = str(Path(path).resolve())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bundles", default="kd,kdml_seg")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--teacher", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--deploy", choices=("auto", "skip"), default="auto")
    parser.add_argument("--no_process", action="store_true", help="skip the new-process runs of monai-kd")
    parser.add_argument("--markdown_only", action="store_true",
                        help=f"rewrite {OUT_MD.relative_to(REPO)} from {OUT_JSON.relative_to(REPO)}, run nothing")
    args = parser.parse_args(argv)
    if args.markdown_only:
        text = markdown(_json(OUT_JSON))
        write_section(OUT_MD, text, SECTION)
        print(text)
        return 0

    import pydicom
    import torch

    import monai

    if not CT.is_dir():
        raise SystemExit(f"bench_dicom_inference.py: error: CT series not found: {CT}")
    from monai_kd.io import load_dicom_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = load_dicom_series(CT, modality="CT")
    first = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    names = [n for n in args.bundles.split(",") if (REPO / "bundles" / n / "configs" / "metadata.json").is_file()]
    notes = [f"bundles/{n} does not exist; not benchmarked." for n in args.bundles.split(",") if n not in names]
    deploy = args.deploy == "auto" and DEPLOY_PYTHON.exists()
    if not deploy:
        notes.append("MONAI Deploy app not run: " + ("--deploy skip" if args.deploy == "skip" else
                     f"{DEPLOY_PYTHON.relative_to(REPO)} does not exist (bash scripts/deploy/setup_venv.sh)."))
    report: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "repeats": args.repeats,
        "input": {"path": os.path.relpath(CT, REPO),
                  "slices": len(series.frames), "shape": list(series.spatial_shape),
                  "transfer_syntax": first.file_meta.TransferSyntaxUID.name},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                        "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                        "torch_threads": torch.get_num_threads()},
        "results": [],
        "notes": notes,
    }
    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        work = Path(tmp)
        weights, teachers = _pairs(args.weights), _pairs(args.teacher)
        for name in names:
            for v in prepare(name, work, weights, teachers):
                row = {"bundle": name, "model": v["model"], "params": v["params"], "weights": v["weights"]}
                print(f"== {name} {v['model']} ({v['params']:,} parameters; {v['weights']})", flush=True)
                args_skip_process = args.no_process
                for key, fn, enabled in (("infer_dicom", bench_in_process, True),
                                         ("infer_dicom_process", bench_cli_process, True),
                                         ("deploy", bench_deploy, deploy)):
                    if not enabled or (key == "infer_dicom_process" and args_skip_process):
                        continue
                    try:
                        row[key] = fn(v, args.repeats, work)
                        shown = row[key].get("total", row[key].get("wall"))
                        print(f"   {key}: median {shown:.3f} s", flush=True)
                    except Exception as e:  # noqa: BLE001 - recorded in the report (e.g. a refused input)
                        message = str(e).splitlines()[0] if str(e) else type(e).__name__
                        row[key] = {"error": f"{type(e).__name__}: {message}"[:300]}
                        print(f"   {key}: {row[key]['error']}", flush=True)
                        if key == "infer_dicom":
                            row["infer_dicom_process"] = {"error": "not run (the in-process run was refused)"}
                            args_skip_process = True
                            continue
                report["results"].append(row)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(report, indent=2))
    text = markdown(report)
    write_section(OUT_MD, text, SECTION)
    print()
    print(text)
    print(f"wrote {OUT_JSON.relative_to(REPO)} and {OUT_MD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
