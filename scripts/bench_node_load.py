#!/usr/bin/env python
"""Load benchmark of ``monai-kd serve``: 20 series pushed at once; every result must arrive exactly once.

    OMP_NUM_THREADS=1 python scripts/bench_node_load.py [--ct_copies 14] [--workers 1,2] [--quiet_time 5]
        [--work scripts/_work/bench_node_load] [--markdown_only]

The series: ``--ct_copies`` copies of the real CT series ``../shared/data/totalsegmentator-examples/
example_ct_dicom`` (20 JPEG 2000 slices of 512 x 512), each with new Study/Series/SOP Instance UIDs
(:func:`monai_kd.node.testing.restamp_series`), and the FLAIR volume of every BraTS subject in
``../shared/data/brats2015-sample`` (6; 155 slices of 240 x 240) written as a DICOM MR series
(:func:`monai_kd.io.dicom_image.write_dicom_series`): 20 series, 1,210 instances with the defaults.

The node is the real command, ``python -m monai_kd.cli serve``, in its own process on 127.0.0.1, with routing
rules CT -> ``bundles/kd`` (2D classifier: Comprehensive SR of the middle slice) and MR with a description
matching ``flair`` -> ``bundles/kdml_seg`` (2D U-Net slice by slice: DICOM SEG). Results go by C-STORE to a
receiving storage SCP (:class:`monai_kd.node.testing.StorageCollector`) and to an output folder. All series are
pushed at the same moment, one association per series (20 threads); once per worker count of ``--workers``
(default 1 and 2), each with a new node and work folder.

Measured: the wall time from the first C-STORE until the last result arrived, hence series per hour; each
series' latency (push start -> its result received; includes the quiet time); the node process' peak resident
memory (``VmHWM`` of ``/proc/<pid>/status``: models, queue, decoded volumes, everything) and its resident memory
once idle after start-up; and the checks: every series has exactly one result at the receiver (none lost, none
duplicated), nothing quarantined.

Weights: each bundle's ``models/model.pt`` if present, else freshly initialised (seed 0) -- throughput does not
depend on weight values. Writes ``<work>/bench_node_load.json`` and the ``node-load`` section of
``docs/bench_dicom_inference.md`` (:func:`monai_kd.reporting.write_section`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data"))
CT = DATA / "totalsegmentator-examples" / "example_ct_dicom"
BRATS = DATA / "brats2015-sample"
OUT_MD = REPO / "docs" / "bench_dicom_inference.md"
SECTION = "node-load"


def _fresh_weights(bundle: Path, path: Path) -> str:
    """``models/model.pt`` of the bundle, else a freshly initialised ``network_def`` (seed 0) saved to ``path``."""
    own = bundle / "models" / "model.pt"
    if own.is_file():
        return str(own)
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return str(path)


def prepare_series(work: Path, ct_copies: int) -> list[dict[str, Any]]:
    """Write the CT copies and the BraTS FLAIR MR series; one ``{"name", "files", "series_uid", ...}`` each."""
    import nibabel as nib
    import numpy as np
    import pydicom

    from monai_kd.data import brats_volume_datalist
    from monai_kd.io.dicom_image import write_dicom_series
    from monai_kd.node.testing import restamp_series

    series = []
    for k in range(ct_copies):
        files = restamp_series(CT, work / "series" / f"ct{k:02d}")
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        series.append({"name": f"ct{k:02d}", "modality": "CT", "files": files, "series_uid": uid})
    for split in ("train", "validation", "test"):
        for item in brats_volume_datalist(BRATS, split, contrast="flair"):
            image = nib.load(item["image"])
            info = write_dicom_series(np.asarray(image.dataobj, dtype=np.float32), image.affine,
                                      work / "series" / item["subject"], modality="MR", series_description="FLAIR",
                                      patient_id=item["subject"], protect=item["image"])
            series.append({"name": item["subject"], "modality": "MR", "files": list(info.files),
                           "series_uid": info.series_uid})
    return series


def _peak_and_current_mb(pid: int) -> tuple[float, float]:
    """``VmHWM`` (peak resident) and ``VmRSS`` of a process, MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmHWM"], values["VmRSS"]


def _routes_and_weights(work: Path) -> tuple[dict, dict]:
    """The routing rules file (CT -> kd, MR flair -> kdml_seg) and the weights used."""
    kd, kdml_seg = REPO / "bundles" / "kd", REPO / "bundles" / "kdml_seg"
    weights = {"kd": _fresh_weights(kd, work / "kd.pt"), "kdml_seg": _fresh_weights(kdml_seg, work / "kdml_seg.pt")}
    routes = {"routes": [
        {"name": "ct-classifier", "bundle": str(kd), "ckpt_file": weights["kd"], "modality": "CT"},
        {"name": "flair-tumour", "bundle": str(kdml_seg), "ckpt_file": weights["kdml_seg"], "modality": "MR",
         "description": "flair"},
    ]}
    (work / "routes.json").write_text(json.dumps(routes, indent=2))
    return routes, weights


def run_node(work: Path, series: list[dict], workers: int, quiet_time: float, timeout: float) -> dict[str, Any]:
    """Start ``monai-kd serve`` with ``workers`` workers, push every series at once, collect the results."""
    from monai_kd.node import parse_address, store_files
    from monai_kd.node.testing import StorageCollector, free_port

    import logging

    resends: list[str] = []  # lost C-STORE responses the sender recovered from by resending (see store_files)

    class _Resends(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "again in a new association" in record.getMessage():
                resends.append(record.getMessage())

    handler = _Resends()
    logging.getLogger("monai_kd.node").addHandler(handler)
    port = free_port()
    collector = StorageCollector(work / "received").start()
    arrivals = collector.first_arrival  # source series -> perf_counter() when its first result arrived
    log = work / "serve.log"
    command = [sys.executable, "-m", "monai_kd.cli", "serve", "--work_dir", str(work / "node"), "--routes",
               str(work.parent / "routes.json"), "--port", str(port), "--quiet_time", str(quiet_time), "--workers",
               str(workers), "--destination", collector.address, "--output_dir", str(work / "out"),
               "--max_associations", str(len(series) + 4)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while f"on 127.0.0.1:{port}" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"monai-kd serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(1.0)
        _, idle_rss = _peak_and_current_mb(process.pid)
        address = parse_address(f"MONAIKD@127.0.0.1:{port}")
        barrier = threading.Barrier(len(series))
        statuses: dict[str, list[int]] = {}

        failures: dict[str, str] = {}

        def push(s: dict) -> None:
            barrier.wait()
            try:
                statuses[s["name"]] = store_files(s["files"], address, calling_ae="BENCH")
            except Exception as e:  # noqa: BLE001 - recorded: the series then reaches the node incomplete
                failures[s["name"]] = f"{type(e).__name__}: {e}"

        print(f"== {workers} worker(s): pushing {len(series)} series at once to {address}", flush=True)
        threads = [threading.Thread(target=push, args=(s,)) for s in series]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        push_seconds = time.perf_counter() - start
        print(f"   pushed in {push_seconds:.1f} s; waiting for the results", flush=True)
        deadline = time.monotonic() + timeout
        quarantine = work / "node" / "quarantine"
        while len(arrivals) + len(list(quarantine.glob("*.json"))) < len(series) and time.monotonic() < deadline:
            time.sleep(0.5)
        wall = max(arrivals.values(), default=time.perf_counter()) - start
        time.sleep(2 * quiet_time + 2)  # anything duplicated would arrive now
        peak_rss, _ = _peak_and_current_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        collector.stop()
        logging.getLogger("monai_kd.node").removeHandler(handler)

    import re

    stored = re.search(r"(\d+) instance\(s\) stored, ([\d.]+) ms per C-STORE on average, ([\d.]+) s at most",
                       log.read_text())
    expected = {s["series_uid"] for s in series}
    counts = Counter(source for _, _, source in collector.received)
    latencies = {s["name"]: arrivals[s["series_uid"]] - start for s in series if s["series_uid"] in arrivals}
    done = [json.loads(p.read_text()) for p in sorted((work / "node" / "done").glob("*.json"))]
    sent = {s["series_uid"]: len(s["files"]) for s in series}
    run = {
        "workers": workers,
        "refused_instances": sum(1 for v in statuses.values() for s in v if s != 0),
        "push_seconds": round(push_seconds, 2),
        "wall_seconds": round(wall, 2),
        "series_per_hour": round(len(series) / wall * 3600, 1) if wall > 0 else None,
        "latency_seconds": {k: round(v, 2) for k, v in latencies.items()},
        "node_seconds_per_series": {d["series_uid"]: d["seconds"] for d in done},
        "results_received": sum(counts.values()),
        "series_with_result": len(expected & set(counts)),
        "lost": sorted(expected - set(counts)),
        "duplicated": sorted(uid for uid, n in counts.items() if n > 1),
        "unexpected": sorted(set(counts) - expected),
        "quarantined": [json.loads(p.read_text())["reason"] for p in sorted(quarantine.glob("*.json"))],
        "push_failures": failures,
        "sender_resends": len(resends),
        "incomplete": {d["series_uid"]: f"{d['instances']} of {sent[d['series_uid']]} instances" for d in done
                       if d["series_uid"] in sent and d["instances"] < sent[d["series_uid"]]},
        "outputs_in_folder": len(list((work / "out").glob("*.dcm"))),
        "node_c_store_ms_mean": float(stored.group(2)) if stored else None,
        "node_c_store_seconds_max": float(stored.group(3)) if stored else None,
        "node_idle_rss_mb": round(idle_rss, 1),
        "node_peak_rss_mb": round(peak_rss, 1),
    }
    print(f"   {run['series_with_result']}/{len(series)} results, {run['series_per_hour']} series/h, "
          f"peak {run['node_peak_rss_mb']} MB", flush=True)
    return run


def _ok(run: dict) -> bool:
    return not (run["lost"] or run["duplicated"] or run["unexpected"] or run["quarantined"]
                or run.get("push_failures") or run.get("incomplete"))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "-"


def markdown(report: dict) -> str:
    env, settings, runs = report["environment"], report["settings"], report["runs"]
    by_modality = ", ".join(f"{n} {m}" for m, n in report["series_by_modality"].items())

    def row(name: str, cell) -> str:
        return f"| {name} | " + " | ".join(cell(r) for r in runs) + " |"

    lines = [
        f"Generated by `OMP_NUM_THREADS={env['omp_num_threads']} python {' '.join(report['command'])}` "
        f"({report['date']}, {env['machine']}, {env['cpu_count']} CPUs shared with other work, Python "
        f"{env['python']}, torch {env['torch']}). `monai-kd serve` in its own process on 127.0.0.1 with a "
        f"{settings['quiet_time']:g} s quiet time; routes CT -> `bundles/kd` (SR of the middle slice) and MR "
        "'flair' -> `bundles/kdml_seg` (SEG, slice by slice); weights "
        + "; ".join(f"{k}: {v}" for k, v in report["weights"].items())
        + f". {report['series']} series ({by_modality}; {report['instances']:,} instances) pushed at the same "
        "moment, one association each; results C-STOREd to a receiving SCP and written to a folder. A new node "
        "and work folder for each column.",
        "",
        "| measure | " + " | ".join(f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
        row("series pushed / with a result / results received",
            lambda r: f"{report['series']} / {r['series_with_result']} / {r['results_received']}"),
        row("lost / duplicated / quarantined",
            lambda r: f"{len(r['lost'])} / {len(r['duplicated'])} / {len(r['quarantined'])}"),
        row("instances refused / series whose push failed / results of incomplete series",
            lambda r: f"{r['refused_instances']} / {len(r.get('push_failures', {}))} / {len(r.get('incomplete', {}))}"),
        row("lost C-STORE responses the sender resent after (pynetdicom#842)", lambda r: str(r.get("sender_resends", 0))),
        row("push of all instances (s)", lambda r: f"{r['push_seconds']:.1f}"),
        row("first C-STORE -> last result (s)", lambda r: f"{r['wall_seconds']:.1f}"),
        row("**series per hour**", lambda r: f"**{r['series_per_hour']:,.0f}**"),
        row("latency per series, median (min-max) (s)", lambda r: _spread(list(r["latency_seconds"].values()))),
        row("node processing per series, median (min-max) (s)",
            lambda r: _spread(list(r["node_seconds_per_series"].values()))),
        row("node C-STORE handling, mean (ms) / max (s)",
            lambda r: f"{r.get('node_c_store_ms_mean') or 0:.1f} / {r.get('node_c_store_seconds_max') or 0:.2f}"),
        row("node resident memory idle after start-up (MB)", lambda r: f"{r['node_idle_rss_mb']:,.0f}"),
        row("**node peak resident memory (MB)**", lambda r: f"**{r['node_peak_rss_mb']:,.0f}**"),
        "",
        ("All results arrived, each exactly once and of the complete series, in every run." if all(_ok(r) for r in runs)
         else "**Not every series got exactly one result of the complete series** (see the JSON: lost / duplicated "
         "/ quarantined / push_failures / incomplete)."),
        "Latency counts from the common push start, so it includes waiting in the queue behind the other series and "
        "the quiet time; *node processing* is routing, decoding, inference, writing and delivery of one series "
        "(with several workers they share the 2 cores, so each takes longer).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct_copies", type=int, default=14)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, one run each")
    parser.add_argument("--quiet_time", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for all results")
    parser.add_argument("--work", default=str(REPO / "scripts" / "_work" / "bench_node_load"))
    parser.add_argument("--markdown_only", action="store_true", help="re-render the section from the JSON")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.work).resolve()
    out_json = work.parent / "bench_node_load.json"
    if args.markdown_only:
        report = json.loads(out_json.read_text())
    else:
        for path in (CT, BRATS):
            if not path.is_dir():
                raise SystemExit(f"bench_node_load.py: error: data not found: {path}")
        import torch

        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        routes, weights = _routes_and_weights(work)
        print("== writing the series", flush=True)
        series = prepare_series(work, args.ct_copies)
        report = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": ["scripts/bench_node_load.py", *(argv if argv is not None else sys.argv[1:])],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
                            "machine": platform.machine()},
            "settings": {"quiet_time": args.quiet_time, "ct_copies": args.ct_copies},
            "routes": routes["routes"],
            "weights": {k: "trained: " + v if "models" in v else "freshly initialised (seed 0)"
                        for k, v in weights.items()},
            "series": len(series),
            "series_by_modality": dict(Counter(s["modality"] for s in series)),
            "instances": sum(len(s["files"]) for s in series),
            "runs": [],
        }
        print(f"   {report['series']} series, {report['instances']} instances", flush=True)
        for workers in (int(w) for w in str(args.workers).split(",")):
            report["runs"].append(run_node(work / f"workers{workers}", series, workers, args.quiet_time,
                                           args.timeout))
        out_json.write_text(json.dumps(report, indent=2))
    from monai_kd.reporting import write_section

    text = markdown(report)
    write_section(OUT_MD, text, SECTION)
    print(text)
    print(f"wrote {out_json} and the '{SECTION}' section of {OUT_MD.relative_to(REPO)}")
    return 0 if all(_ok(r) for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
