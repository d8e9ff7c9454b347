#!/usr/bin/env python
"""Start-up cost of the CLI: ``monai-kd infer-dicom`` as a new process beside ``import torch, monai`` (issue 15).

    OMP_NUM_THREADS=1 python scripts/bench_startup.py [--repeats 7] [--bundle bundles/kd] [--max-load 1.0]
        [--allow-busy]

New-process wall seconds, median of ``--repeats`` rounds (the commands interleaved in each round, so a drifting
machine load hits them alike):

- ``import_torch_monai``: ``python -c "import torch, monai"``, the floor of any command that runs a network;
- ``help``: ``python -m monai_kd.cli --help`` (must not import torch or MONAI; target <= 1 s);
- ``argument_error``: ``monai-kd train bundles/kd --max_epoch 3`` (a misspelt override: one line, exit 2);
- ``infer_dicom``: ``monai-kd infer-dicom`` with the bundle's student (fresh weights, seed 0) on the real CT series
  ``totalsegmentator-examples/example_ct_dicom`` (20 JPEG 2000 slices): read, infer, write the DICOM SR + JSON.

``infer_dicom_overhead`` = median ``infer_dicom`` / median ``import_torch_monai`` - 1 (target: at most +0.30).

Where the overhead goes: one extra run of each of ``import torch, monai`` and ``infer-dicom`` under
``python -X importtime``; the modules ``infer-dicom`` imports beyond ``import torch, monai``, summed (self time) by
top-level package, and the in-process stage seconds of :func:`monai_kd.dicom_inference.infer_dicom`.
(``-X importtime`` inflates import times; use them as shares, the medians above as the result.)

A busy machine (1-minute load average above ``--max-load``) is refused unless ``--allow-busy``; a busy run is
flagged in the JSON and the Markdown shows no numbers from it. Writes ``scripts/_work/bench_startup.json`` and the
``startup`` section of ``docs/bench_dicom_inference.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from bench_dicom_growth import make_studies, student_checkpoint  # noqa: E402

from monai_kd.reporting import busy_refusal, busy_section, is_busy, load_average, run_header, save_timing_run  # noqa: E402

WORK = REPO / "scripts" / "_work" / "startup"
OUT_JSON = REPO / "scripts" / "_work" / "bench_startup.json"
OUT_MD = REPO / "docs" / "bench_dicom_inference.md"
SECTION = "startup"
RERUN = "OMP_NUM_THREADS=1 python scripts/bench_startup.py"
TARGET_OVERHEAD = 0.30
TARGET_HELP_S = 1.0
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PAGER": "cat"}


def commands(bundle: Path, folder: Path, ckpt: Path) -> dict[str, tuple[list[str], int]]:
    """Name -> (command, expected exit code)."""
    py = sys.executable
    return {
        "import_torch_monai": ([py, "-c", "import torch, monai"], 0),
        "help": ([py, "-m", "monai_kd.cli", "--help"], 0),
        "argument_error": ([py, "-m", "monai_kd.cli", "train", str(bundle), "--max_epoch", "3"], 2),
        "infer_dicom": ([py, "-m", "monai_kd.cli", "infer-dicom", "--bundle", str(bundle), "--input", str(folder),
                         "--output", str(WORK / "out"), "--ckpt_file", str(ckpt), "--force"], 0),  # CT: outside the contract
    }


def run_once(cmd: list[str], code: int, extra: list[str] | None = None) -> tuple[float, str]:
    """Wall seconds of one new process (its exit code must be ``code``) and its stderr."""
    full = [cmd[0], *(extra or []), *cmd[1:]]
    start = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, cwd=REPO, env=_env())
    elapsed = time.perf_counter() - start
    if proc.returncode != code:
        raise RuntimeError(f"{' '.join(full)} exited {proc.returncode}, expected {code}: {proc.stderr[-2000:]}")
    return elapsed, proc.stderr


def import_table(stderr: str) -> dict[str, tuple[int, int]]:
    """``-X importtime`` output -> module -> (self us, cumulative us)."""
    table = {}
    for line in stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            table[m.group(4)] = (int(m.group(1)), int(m.group(2)))
    return table


def imports_beyond(base: dict, full: dict, top: int = 12) -> list[dict]:
    """Top-level packages ``full`` imports beyond ``base``, by summed self time (largest first)."""
    by_package: dict[str, list] = {}
    for name, (self_us, _) in full.items():
        if name not in base:
            entry = by_package.setdefault(name.split(".")[0], [0, 0])
            entry[0] += self_us
            entry[1] += 1
    rows = [{"package": k, "self_s": v[0] / 1e6, "modules": v[1]} for k, v in by_package.items()]
    return sorted(rows, key=lambda r: -r["self_s"])[:top]


def stages(bundle: Path, folder: Path, ckpt: Path) -> dict:
    """In-process stage seconds of one ``infer_dicom`` call (a fresh process, after its imports)."""
    code = ("import json, sys, time; t = time.perf_counter(); from monai_kd.dicom_inference import infer_dicom; "
            "imp = time.perf_counter() - t; timings = {}; "
            "infer_dicom(sys.argv[1], sys.argv[2], sys.argv[3], ckpt_file=sys.argv[4], timings=timings, force=True); "
            "print('RESULT ' + json.dumps({'import_dicom_inference_s': imp, **timings}))")
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(folder), str(WORK / "out_stages"), str(ckpt)],
                          capture_output=True, text=True, cwd=REPO, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"in-process infer_dicom failed: {proc.stderr[-2000:]}")
    return json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])


def highdicom_tables(repeats: int) -> dict:
    """Seconds highdicom takes, once per process, to parse its IOD/module tables (``_standard/*.json``, ~22 MB) at
    the first SR or SEG it builds (``is_attribute_in_iod``): part of ``infer-dicom``'s *write* stage."""
    code = ("import time, highdicom; from highdicom._standard_utils import get_module_attribute_map as m; "
            "t = time.perf_counter(); m(); print(time.perf_counter() - t)")
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=_env())
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1:]}
        runs.append(float(proc.stdout.strip().splitlines()[-1]))
    return {"median_s": statistics.median(runs), "runs_s": runs}


def bench(bundle: Path, repeats: int) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    folder = make_studies(1, WORK)
    ckpt = student_checkpoint(bundle, WORK / f"{bundle.name}_student.pt")
    cmds = commands(bundle, folder, ckpt)
    runs: dict[str, list[float]] = {name: [] for name in cmds}
    for r in range(repeats):
        for name, (cmd, code) in cmds.items():
            runs[name].append(run_once(cmd, code)[0])
        print(f"round {r + 1}/{repeats}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in runs.items()), flush=True)
    result: dict = {name: {"median_s": statistics.median(t), "runs_s": t} for name, t in runs.items()}
    result["infer_dicom_overhead"] = result["infer_dicom"]["median_s"] / result["import_torch_monai"]["median_s"] - 1
    _, base_err = run_once(*cmds["import_torch_monai"], extra=["-X", "importtime"])
    _, full_err = run_once(*cmds["infer_dicom"], extra=["-X", "importtime"])
    base, full = import_table(base_err), import_table(full_err)
    result["imports_beyond_torch_monai"] = imports_beyond(base, full)
    result["importtime_self_s"] = {"import_torch_monai": sum(v[0] for v in base.values()) / 1e6,
                                   "infer_dicom_extra": sum(v[0] for k, v in full.items() if k not in base) / 1e6}
    result["heavy_modules_loaded"] = sorted(m for m in ("highdicom", "onnx", "onnxruntime", "ignite", "fire",
                                                        "monai_kd.engines", "monai_kd.handlers", "monai_kd.losses")
                                            if m in full)
    result["in_process_stages_s"] = stages(bundle, folder, ckpt)
    result["highdicom_iod_tables"] = highdicom_tables(3)
    return result


def markdown(result: dict) -> str:
    """The generated section."""
    head = (f"Machine: {result['machine']}; bundle `{result['bundle']}` student (fresh weights) on the CT series; "
            f"OMP_NUM_THREADS={result['omp_threads']}; median of {result['repeats']} new processes per command; "
            f"load average {result['load_before']:.2f} before, {result['load_after']:.2f} after; run {result['date']}.")
    if result["busy"]:
        return busy_section(head, result["max_load"], RERUN)
    over = result["infer_dicom_overhead"]
    lines = [head, "", "| command (new process) | wall s (median) | x `import torch, monai` | target |",
             "|---|---:|---:|---|"]
    base = result["import_torch_monai"]["median_s"]
    targets = {"import_torch_monai": "", "help": f"<= {TARGET_HELP_S:.0f} s",
               "argument_error": f"<= {TARGET_HELP_S:.0f} s", "infer_dicom": f"<= {1 + TARGET_OVERHEAD:.2f}x"}
    for name in ("import_torch_monai", "help", "argument_error", "infer_dicom"):
        t = result[name]["median_s"]
        lines.append(f"| `{name}` | {t:.2f} | {t / base:.2f} | {targets[name]} |")
    lines += ["", f"`infer-dicom` costs {100 * over:+.0f}% over `import torch, monai` "
              f"({'meets' if over <= TARGET_OVERHEAD else 'misses'} the +{100 * TARGET_OVERHEAD:.0f}% target). "
              "Imported beyond `import torch, monai` (`-X importtime` self seconds, inflated by the tracing; "
              "shares only): " + ", ".join(f"{r['package']} {r['self_s']:.2f}" for r in
                                           result["imports_beyond_torch_monai"][:8]) + ". In-process stages (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["in_process_stages_s"].items()) + "."]
    tables = result.get("highdicom_iod_tables", {})
    if "median_s" in tables:
        lines[-1] += (f" Of *write*, {tables['median_s']:.2f} s (median of 3 processes) is highdicom parsing its IOD "
                      "tables (`_standard/module_attribute_map.json`) at the first SR/SEG of a process.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "kd")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--allow-busy", action="store_true", help="measure anyway; the result is flagged busy")
    parser.add_argument("--output", type=Path, default=OUT_JSON)
    parser.add_argument("--markdown", type=Path, default=OUT_MD)
    args = parser.parse_args(argv)
    load_before = load_average()
    refusal = busy_refusal(load_before, args.max_load, args.allow_busy)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    result = bench(args.bundle.resolve(), args.repeats)
    load_after = load_average()
    result = run_header(
        bundle=args.bundle.name, omp_threads=os.environ.get("OMP_NUM_THREADS", "unset"), repeats=args.repeats,
        load_before=load_before, load_after=load_after, max_load=args.max_load,
        busy=is_busy(load_before, [load_after], args.max_load, own_threads=1), **result,
    )
    save_timing_run(result, args.output, args.markdown, markdown(result), SECTION, "| command (new process) |")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
