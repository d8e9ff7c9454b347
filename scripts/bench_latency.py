"""Latency of every bundle's teacher(s) and student on this CPU, measured honestly.

For each bundle and model (networks built from the bundle's own configs, random weights: latency does not depend on
the weights' values), each batch size (1 and 64) and thread count (1 and 2, pinned with ``torch.set_num_threads``
and ONNX Runtime's intra-op threads), each runtime (eager PyTorch, TorchScript trace, ONNX Runtime), the script runs
warm-up passes, then ``--repeats`` timed passes, and records the median and the inter-quartile range. Parameters and
multiply-accumulates (``torch.utils.flop_counter``, MACs = FLOPs / 2) are recorded per model. Ratios teacher /
student are taken within one run.

A busy machine gives no honest latency: the 1-minute load average is read before and after; above ``--max-load``
the run is refused (exit 3) unless ``--allow-busy``, and a busy run is flagged in the JSON and the Markdown.

Writes ``docs/bench_latency.json`` and the table between the ``<!-- latency:begin -->``/``<!-- latency:end -->``
markers of ``docs/bench_latency.md``.

Example::

    python scripts/bench_latency.py                      # every bundle, refuses on a busy machine
    python scripts/bench_latency.py --bundles kd --repeats 20 --batches 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: bundle -> (config files merged in order, {model name: config key}); the student is ``network_def``
BUNDLES: dict[str, tuple[list[str], dict[str, str]]] = {
    "kd": (["train.json"], {"teacher": "teacher_def", "student": "network_def"}),
    "emtkd": (["train.json"], {"teacher_a": "teacher_a#network_def", "teacher_b": "teacher_b#network_def", "student": "network_def"}),
    "kdml_cls": (["train.json"], {"teacher": "teacher_def", "student": "network_def"}),
    "kdml_seg": (["train.json"], {"teacher": "teacher_def", "student": "network_def"}),
}
MARKER = "latency"


def load_average() -> float:
    """The 1-minute load average (``os.getloadavg``)."""
    return os.getloadavg()[0]


def build(bundle: str, key: str) -> Any:
    """Instantiate ``key`` from the bundle's configs (on CPU)."""
    from monai.bundle import ConfigParser

    files, _ = BUNDLES[bundle]
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f) for f in files])
    parser["device"] = "$torch.device('cpu')"
    return parser.get_parsed_content(key).cpu().eval()


def input_shape(bundle: str) -> list[int]:
    """Channels and spatial shape of the bundle's student input, from its metadata."""
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    return [int(image["num_channels"]), *[int(s) for s in image["spatial_shape"]]]


def macs(net: Any, x: Any) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2, counted by ``torch.utils.flop_counter``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops() // 2)


def time_passes(fn: Any, warmup: int, repeats: int) -> dict[str, float]:
    """Median and inter-quartile range (seconds) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "repeats": repeats}


def runtimes(net: Any, example: Any, threads: int, folder: Path) -> dict[str, Any]:
    """Callables ``f(x)`` per runtime: eager, TorchScript (traced) and ONNX Runtime (legacy TorchScript exporter)."""
    import onnxruntime as ort
    import torch

    traced = torch.jit.trace(net, example)
    onnx_path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(onnx_path), dynamo=False, input_names=["image"], output_names=["pred"],
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return {
        "eager": lambda x: net(x),
        "torchscript": lambda x: traced(x),
        "onnxruntime": lambda x: session.run(None, {"image": x.numpy()}),
    }


def bench(bundles: list[str], batches: list[int], threads: list[int], warmup: int, repeats: int) -> list[dict]:
    """Every measurement as a record."""
    import torch

    records = []
    for bundle in bundles:
        shape = input_shape(bundle)
        for model, key in BUNDLES[bundle][1].items():
            net = build(bundle, key)
            params = sum(p.numel() for p in net.parameters())
            one = torch.rand(1, *shape)
            n_macs = macs(net, one)
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                    fns = runtimes(net, one, n_threads, Path(tmp))
                    for batch in batches:
                        x = torch.rand(batch, *shape)
                        for runtime, fn in fns.items():
                            t = time_passes(lambda: fn(x), warmup, repeats)
                            records.append({"bundle": bundle, "model": model, "parameters": params, "macs": n_macs,
                                            "threads": n_threads, "batch": batch, "runtime": runtime, **t})
                            print(f"{bundle:>9} {model:>10} threads {n_threads} batch {batch:>3} {runtime:>11}: "
                                  f"{1000 * t['median_s']:8.2f} ms", flush=True)
    return records


def markdown(result: dict) -> str:
    """Tables per bundle: median latency (ms) per model, runtime, threads and batch; teacher/student ratios."""
    lines = [f"Machine: {result['machine']}; load average {result['load_before']:.2f} before, "
             f"{result['load_after']:.2f} after" + (" **(busy: not an honest measurement)**" if result["busy"] else "")
             + f"; {result['repeats']} timed passes after {result['warmup']} warm-up, median [q1, q3] in ms.", ""]
    records = result["records"]
    for bundle in dict.fromkeys(r["bundle"] for r in records):
        rs = [r for r in records if r["bundle"] == bundle]
        models = list(dict.fromkeys(r["model"] for r in rs))
        lines += [f"### {bundle}", "", "| model | parameters | MACs | " + " | ".join(
            f"{rt} t{t} b{b}" for t in result["threads"] for b in result["batches"] for rt in result["runtimes"]) + " |"]
        lines.append("|---|---:|---:|" + "---:|" * (len(result["threads"]) * len(result["batches"]) * len(result["runtimes"])))
        cell = {(r["model"], r["runtime"], r["threads"], r["batch"]): r for r in rs}
        for model in models:
            first = next(r for r in rs if r["model"] == model)
            cells = []
            for t in result["threads"]:
                for b in result["batches"]:
                    for rt in result["runtimes"]:
                        r = cell[(model, rt, t, b)]
                        cells.append(f"{1000 * r['median_s']:.2f} [{1000 * r['q1_s']:.2f}, {1000 * r['q3_s']:.2f}]")
            lines.append(f"| {model} | {first['parameters']:,} | {first['macs']:,} | " + " | ".join(cells) + " |")
        student = "student"
        for model in models:
            if model == student:
                continue
            ratios = [f"t{t} b{b}: {cell[(model, 'eager', t, b)]['median_s'] / cell[(student, 'eager', t, b)]['median_s']:.1f}x"
                      for t in result["threads"] for b in result["batches"]]
            lines.append(f"\nEager {model} / student latency: " + ", ".join(ratios) + ".")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=list(BUNDLES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-load", type=float, default=0.5, help="refuse when the 1-minute load average is above")
    parser.add_argument("--allow-busy", action="store_true", help="measure anyway, flagging the result as busy")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "bench_latency.json")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs" / "bench_latency.md")
    args = parser.parse_args(argv)
    load_before = load_average()
    if load_before > args.max_load and not args.allow_busy:
        print(f"refused: the machine is busy (1-minute load average {load_before:.2f} > {args.max_load}); "
              "latency measured now would not be a property of the models. Re-run when idle, or --allow-busy.",
              file=sys.stderr)
        return 3
    records = bench(args.bundles, args.batches, args.threads, args.warmup, args.repeats)
    load_after = load_average()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
        "load_before": load_before, "load_after": load_after,
        "busy": max(load_before, load_after) > args.max_load,
        "batches": args.batches, "threads": args.threads, "runtimes": ["eager", "torchscript", "onnxruntime"],
        "warmup": args.warmup, "repeats": args.repeats, "records": records,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    sys.path.insert(0, str(REPO))
    from monai_kd.reporting import markers, write_section

    if not args.markdown.is_file():
        begin, end = markers(MARKER)
        args.markdown.write_text(f"# CPU latency of every bundle's teacher and student\n\nGenerated by "
                                 f"`python scripts/bench_latency.py`; do not edit the table by hand.\n\n{begin}\n{end}\n")
    table = markdown(result)
    write_section(args.markdown, table, MARKER)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
