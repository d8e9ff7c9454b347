#!/usr/bin/env python
"""Cost growth of DICOM inference over 1, 10 and 50 series in one call, and the start-up cost of ``infer-dicom``.

    OMP_NUM_THREADS=1 python scripts/bench_dicom_growth.py [--counts 1 10 50] [--repeats 3] [--bundle bundles/kd]
        [--max-load 1.0] [--allow-busy]

Growth: the real CT series ``../shared/data/totalsegmentator-examples/example_ct_dicom`` (20 JPEG 2000 slices) is
copied N times as N studies (new Study / Series / SOP Instance UIDs, one folder per patient); one new process per N
runs :func:`monai_kd.dicom_inference.infer_dicom_folder` (what ``monai-kd infer-dicom --all_series`` runs) on the
folder with one loaded model and reports: import seconds, model load, the stage seconds summed over the series, the
resident memory after every series and the peak (``ru_maxrss``). Series per hour = N / (seconds after the model is
loaded); memory is flat when the peak and the last series' resident size do not grow with N.

Start-up: medians over ``--repeats`` new processes of ``python -c "import torch, monai"``, ``monai-kd --help`` and
``monai-kd infer-dicom`` on the one CT series; the overhead of ``infer-dicom`` is its wall time over the import's
(target: at most +30%).

Weights: a freshly initialised student (seed 0): the cost does not depend on the weight values. A busy machine
(1-minute load average above ``--max-load``) is refused unless ``--allow-busy``; a busy run is flagged in the JSON and
the Markdown shows no numbers from it. Writes ``scripts/_work/bench_dicom_growth.json`` and the ``dicom-growth``
section of ``docs/bench_dicom_inference.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from monai_kd.reporting import busy_refusal, busy_section, is_busy, load_average, run_header, save_timing_run  # noqa: E402
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data"))
CT = DATA / "totalsegmentator-examples" / "example_ct_dicom"
WORK = REPO / "scripts" / "_work" / "dicom_growth"
OUT_JSON = REPO / "scripts" / "_work" / "bench_dicom_growth.json"
OUT_MD = REPO / "docs" / "bench_dicom_inference.md"
SECTION = "dicom-growth"

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
from monai_kd.dicom_inference import infer_dicom_folder
imported = time.perf_counter() - start

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

rss = []
timings = {}
infer_dicom_folder(sys.argv[1], sys.argv[2], sys.argv[3], ckpt_file=sys.argv[4], timings=timings, force=True,
                   progress=lambda done, total, uid: rss.append(rss_mb()))
print("RESULT " + json.dumps({"import_s": imported, "timings": timings, "rss_mb": rss,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_studies(count: int, root: Path) -> Path:
    """``count`` copies of the CT series as separate patients / studies / series (new UIDs)."""
    import pydicom

    folder = root / f"n{count}"
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    sources = sorted(CT.iterdir())
    for k in range(count):
        series_uid, study_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        target = folder / f"patient{k:03d}" / "ct"
        target.mkdir(parents=True, exist_ok=True)
        for path in sources:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID = series_uid, study_uid, f"BENCH{k:03d}"
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(target / path.name, enforce_file_format=True)
    return folder


def student_checkpoint(bundle: Path, path: Path) -> Path:
    """A freshly initialised student of the bundle (seed 0)."""
    import torch
    from monai.bundle import ConfigParser

    if path.is_file():
        return path
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def wall(cmd: list[str], repeats: int) -> dict:
    """Median and all wall seconds of ``repeats`` runs of ``cmd`` as a new process (each must succeed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_env())
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return {"median_s": statistics.median(times), "runs_s": times}


def growth(bundle: Path, counts: list[int], ckpt: Path) -> list[dict]:
    """One new process per count: one loaded model over every series of the folder."""
    records = []
    for count in counts:
        folder = make_studies(count, WORK)
        out = WORK / f"out{count}"
        if out.is_dir():
            for path in out.iterdir():
                path.unlink()
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(folder), str(out), str(ckpt)],
                              capture_output=True, text=True, cwd=REPO, env=_env())
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"growth run of {count} series failed: {proc.stderr[-2000:]}")
        child = json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
        t = child["timings"]
        after_load = t["total"] - t.get("model_load", 0.0)
        records.append({
            "series": count, "process_wall_s": elapsed, **child,
            "seconds_per_series": after_load / count, "series_per_hour": 3600 * count / after_load,
            "series_per_hour_with_startup": 3600 * count / elapsed,
        })
        print(f"{count:>3} series: {after_load / count:.2f} s/series after load, peak RSS {child['peak_rss_mb']:.0f} MB, "
              f"process {elapsed:.1f} s", flush=True)
    return records


def startup(bundle: Path, ckpt: Path, repeats: int) -> dict:
    """New-process wall seconds: bare imports, ``--help``, and ``infer-dicom`` on the one CT series."""
    folder = make_studies(1, WORK)
    py = sys.executable
    result = {
        "import_torch_monai": wall([py, "-c", "import torch, monai"], repeats),
        "help": wall([py, "-m", "monai_kd.cli", "--help"], repeats),
        "infer_dicom": wall([py, "-m", "monai_kd.cli", "infer-dicom", "--bundle", str(bundle), "--input", str(folder),
                             "--output", str(WORK / "out_startup"), "--ckpt_file", str(ckpt), "--force"], repeats),
    }
    result["infer_dicom_overhead"] = result["infer_dicom"]["median_s"] / result["import_torch_monai"]["median_s"] - 1
    for name in ("import_torch_monai", "help", "infer_dicom"):
        print(f"{name:>20}: {result[name]['median_s']:.2f} s (median of {repeats})", flush=True)
    return result


def markdown(result: dict) -> str:
    """The generated section."""
    head = (f"Machine: {result['machine']}; bundle `{result['bundle']}` student (fresh weights), "
            f"OMP_NUM_THREADS={result['omp_threads']}; load average {result['load_before']:.2f} before, "
            f"{result['load_after']:.2f} after; run {result['date']}.")
    if result["busy"]:
        return busy_section(head, result["max_load"], "OMP_NUM_THREADS=1 python scripts/bench_dicom_growth.py")
    s = result["startup"]
    lines = [head, "", "| series in one call | s / series (after model load) | series / hour | with start-up | "
             "peak RSS (MB) | RSS after first / last series (MB) | model load (s) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["growth"]:
        lines.append(f"| {r['series']} | {r['seconds_per_series']:.2f} | {r['series_per_hour']:.0f} | "
                     f"{r['series_per_hour_with_startup']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_mb'][0]:.0f} / "
                     f"{r['rss_mb'][-1]:.0f} | {r['timings'].get('model_load', 0):.2f} |")
    lines += ["", f"Start-up, new process, median of {result['repeats']}: `import torch, monai` "
              f"{s['import_torch_monai']['median_s']:.2f} s; `monai-kd --help` {s['help']['median_s']:.2f} s; "
              f"`monai-kd infer-dicom` on one series {s['infer_dicom']['median_s']:.2f} s, "
              f"{100 * s['infer_dicom_overhead']:+.0f}% over the import (target: at most +30%)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", nargs="+", type=int, default=[1, 10, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "kd")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--allow-busy", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--output", type=Path, default=OUT_JSON)
    parser.add_argument("--markdown", type=Path, default=OUT_MD)
    args = parser.parse_args(argv)
    load_before = load_average()
    refusal = busy_refusal(load_before, args.max_load, args.allow_busy)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    ckpt = student_checkpoint(args.bundle, WORK / "student.pt")
    records = growth(args.bundle, args.counts, ckpt)
    start = None if args.skip_startup else startup(args.bundle, ckpt, args.repeats)
    load_after = load_average()
    result = run_header(
        bundle=args.bundle.name, omp_threads=os.environ.get("OMP_NUM_THREADS", "unset"), repeats=args.repeats,
        load_before=load_before, load_after=load_after, max_load=args.max_load,
        busy=is_busy(load_before, [load_after], args.max_load, own_threads=1), growth=records, startup=start,
    )
    if start is not None or result["busy"]:
        save_timing_run(result, args.output, args.markdown, markdown(result), SECTION, "series / hour")
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result) if start is not None or result["busy"] else json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
