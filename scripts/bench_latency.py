"""Latency of every bundle's teacher(s), student and fast student on this CPU, measured honestly.

For each bundle entry and model (networks built from the bundle's own configs, random weights: latency does not
depend on the weights' values) -- the teacher(s), the student (``network_def``) and, where the bundle has a
``student_fast*.json`` overlay, the fast student (:class:`monai_kd.networks.FastStudent`) -- each batch size (1 and
64) and thread count (1 and 2, pinned with ``torch.set_num_threads`` and ONNX Runtime's intra-op threads), each
runtime (eager PyTorch, TorchScript trace, ONNX Runtime, and for students ONNX Runtime on the int8 model quantised
by :func:`monai_kd.quantization.quantize_onnx`), the script runs warm-up passes, then ``--repeats`` timed passes,
and records the median and the inter-quartile range. Parameters and multiply-accumulates
(``torch.utils.flop_counter``, MACs = FLOPs / 2) are recorded per model. Ratios teacher / student are taken within
one run. The accuracy of fast and int8 students is not measured here (random weights): ``scripts/fast_evidence.py``
puts it beside these latencies in ``bundles/kd/docs/README.md``, ``--student fast`` of ``scripts/weckd_evidence.py``,
``scripts/emtkd_evidence.py`` and ``scripts/kdml_evidence.py`` and ``--students fast`` of
``scripts/mmkd_evidence.py`` in theirs; int8 accuracy: kd (``fast_evidence.py``) and mmkd (``mmkd_evidence.py
--int8``) only.

A busy machine gives no honest latency: the 1-minute load average is read before and after; above ``--max-load``
the run is refused (exit 3) unless ``--allow-busy``. A busy run is a draft for development, flagged "busy machine,
not evidence" in the JSON (``busy``) and in ``docs/bench_latency.md``; it never replaces an idle-machine table, and
the bundle READMEs then only say that the latency is not measured yet.

Writes ``docs/bench_latency.json``, the tables between the ``<!-- latency:begin -->``/``<!-- latency:end -->``
markers of ``docs/bench_latency.md`` and, from an idle run, those of every bundle README holding the markers.
The full run (8 bundle entries, 1 and 2 threads, batch 1 and 64) takes about 10 minutes on an idle 2-core CPU.

Example::

    python scripts/bench_latency.py                      # every bundle, refuses on a busy machine
    python scripts/bench_latency.py --bundles kd --repeats 20 --batches 1 --threads 1
    python scripts/bench_latency.py --report-only        # re-render the tables from docs/bench_latency.json

The tables list an int8 model's latency only where its accuracy is measured (``INT8_ACCURACY``: kd's fast student,
mmkd's students), with a line saying where; the other int8 records stay in the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from monai_kd.reporting import busy_section, is_busy, load_average, markers, run_header  # noqa: E402
from monai_kd.reporting import write_timing_section  # noqa: E402

#: entry -> (bundle folder, config files merged in order, {model name: config key}, fast-student overlay or None).
#: The student is ``network_def``; ``student_fast`` is ``network_def`` with the overlay layered on top.
BUNDLES: dict[str, tuple[str, list[str], dict[str, str], str | None]] = {
    "kd": ("kd", ["train.json"], {"teacher": "teacher_def", "student": "network_def"}, "student_fast.json"),
    "emtkd": ("emtkd", ["train.json"], {"teacher_a": "teacher_a#network_def", "teacher_b": "teacher_b#network_def",
                                        "student": "network_def"}, None),
    "emtkd_classification": ("emtkd", ["train_classification.json"], {
        "teacher_a": "teacher_a#network_def", "teacher_b": "teacher_b#network_def", "student": "network_def"},
        "student_fast_classification.json"),
    # the PneumoniaMNIST form (28 px, full-resolution student stem) that scripts/emtkd_evidence.py's tables report
    "emtkd_pneumonia": ("emtkd", ["train_classification.json", "train_pneumonia.json"], {
        "teacher_a": "teacher_a#network_def", "teacher_b": "teacher_b#network_def", "student": "network_def"},
        "student_fast_classification.json"),
    "kdml_cls": ("kdml_cls", ["train.json"], {"teacher": "teacher_def", "student": "network_def"}, "student_fast.json"),
    "kdml_seg": ("kdml_seg", ["train.json"], {"teacher": "teacher_def", "student": "network_def"}, None),
    "mmkd": ("mmkd", ["train.json"], {"teacher_resnet": "teachers_def#resnet", "teacher_densenet": "teachers_def#densenet",
                                      "teacher_cnn": "teachers_def#cnn", "student": "network_def"}, "student_fast.json"),
    "weckd": ("weckd", ["train.json"], {"student": "network_def"}, "student_fast.json"),
}
FAST = "student_fast"
#: (entry, model) -> where the accuracy of its int8 model stands beside this latency. Issue 20: no quantised student's
#: latency without its accuracy, so the tables list ``onnxruntime_int8`` only for these (the JSON keeps every record)
INT8_ACCURACY: dict[tuple[str, str], str] = {
    ("kd", FAST): "the kd README's fast section (`scripts/fast_evidence.py`, post-training and quantisation-aware)",
    ("mmkd", "student"): "the mmkd README's evidence (`scripts/mmkd_evidence.py --int8`)",
    ("mmkd", FAST): "the mmkd README's evidence (`scripts/mmkd_evidence.py --int8`)",
}
INT8 = "onnxruntime_int8"
MARKER = "latency"
MEASURED = "Measured on an idle machine"  # heads every idle-machine table; a busy run never replaces one


def _parser(entry: str, fast: bool = False) -> Any:
    from monai.bundle import ConfigParser

    folder, files, _, overlay = BUNDLES[entry]
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / folder / "configs" / f) for f in [*files, *([overlay] if fast else [])]])
    parser["device"] = "$torch.device('cpu')"
    return parser


def build(bundle: str, key: str, fast: bool = False) -> Any:
    """Instantiate ``key`` from the bundle entry's configs (on CPU); ``fast``: with its fast-student overlay."""
    return _parser(bundle, fast).get_parsed_content(key).cpu().eval()


def models(bundle: str) -> dict[str, tuple[str, bool]]:
    """Model name -> (config key, with the fast overlay) of a bundle entry."""
    out = {name: (key, False) for name, key in BUNDLES[bundle][2].items()}
    if BUNDLES[bundle][3]:
        out[FAST] = ("network_def", True)
    return out


def input_shape(bundle: str) -> list[int]:
    """Channels and spatial shape of the bundle's student input: its metadata, or the config's ``spatial_size``."""
    folder, files, _, _ = BUNDLES[bundle]
    meta = json.loads((REPO / "bundles" / folder / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    spatial = image["spatial_shape"]
    if files != ["train.json"]:  # another form of the bundle (e.g. emtkd classification): its own input size
        parser = _parser(bundle)
        spatial = parser["spatial_size"] if "spatial_size" in parser else spatial
    return [int(image["num_channels"]), *[int(s) for s in spatial]]


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


def runtimes(net: Any, example: Any, threads: int, folder: Path, int8: bool = False) -> dict[str, Any]:
    """Callables ``f(x)`` per runtime: eager, TorchScript (traced), ONNX Runtime (legacy TorchScript exporter) and,
    with ``int8``, ONNX Runtime on the int8 model (:func:`monai_kd.quantization.quantize_onnx`, static, QDQ)."""
    import onnxruntime as ort
    import torch

    from monai_kd.quantization import export_onnx, quantize_onnx

    traced = torch.jit.trace(net, example)
    onnx_path = export_onnx(net, list(example.shape[1:]), folder / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    fns = {
        "eager": lambda x: net(x),
        "torchscript": lambda x: traced(x),
        "onnxruntime": lambda x: session.run(None, {"image": x.numpy()}),
    }
    if int8:
        # activation ranges only set the int8 scales, not the work done: latency needs no real calibration images
        # (the accuracy of int8 students comes from scripts/fast_evidence.py, calibrated on real training images)
        calibration = torch.rand(64, *example.shape[1:], generator=torch.Generator().manual_seed(0)).numpy()
        int8_path = quantize_onnx(onnx_path, folder / "model_int8.onnx", calibration)
        session8 = ort.InferenceSession(int8_path, options, providers=["CPUExecutionProvider"])
        fns["onnxruntime_int8"] = lambda x: session8.run(None, {"image": x.numpy()})
    return fns


def bench(bundles: list[str], batches: list[int], threads: list[int], warmup: int, repeats: int) -> list[dict]:
    """Every measurement as a record."""
    import torch

    records = []
    for bundle in bundles:
        shape = input_shape(bundle)
        for model, (key, fast) in models(bundle).items():
            net = build(bundle, key, fast)
            params = sum(p.numel() for p in net.parameters())
            one = torch.rand(1, *shape)
            n_macs = macs(net, one)
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                    fns = runtimes(net, one, n_threads, Path(tmp), int8=model.startswith("student"))
                    for batch in batches:
                        x = torch.rand(batch, *shape)
                        for runtime, fn in fns.items():
                            t = time_passes(lambda: fn(x), warmup, repeats)
                            records.append({"bundle": bundle, "model": model, "parameters": params, "macs": n_macs,
                                            "threads": n_threads, "batch": batch, "runtime": runtime, **t})
                            print(f"{bundle:>9} {model:>16} threads {n_threads} batch {batch:>3} {runtime:>16}: "
                                  f"{1000 * t['median_s']:8.2f} ms", flush=True)
    return records


BUSY_BANNER = "**Busy machine, not evidence: not an honest measurement.**"


def tables(result: dict, bundles: list[str] | None = None) -> str:
    """Per bundle: median latency in ms [q1, q3] per model and runtime (rows) and threads x batch (columns); then
    teacher / student and teacher / fast-student ratios of the eager medians."""
    lines = []
    records = result["records"]
    columns = [(t, b) for t in result["threads"] for b in result["batches"]]
    for bundle in dict.fromkeys(r["bundle"] for r in records):
        if bundles is not None and bundle not in bundles:
            continue
        rs = [r for r in records if r["bundle"] == bundle]
        cell = {(r["model"], r["runtime"], r["threads"], r["batch"]): r for r in rs}
        lines += [f"### {bundle}", "", "| model | parameters | MACs | runtime | "
                  + " | ".join(f"{t} thread{'s' * (t > 1)}, batch {b}" for t, b in columns) + " |",
                  "|---|---:|---:|---|" + "---:|" * len(columns)]
        for model in dict.fromkeys(r["model"] for r in rs):
            first = next(r for r in rs if r["model"] == model)
            for runtime in dict.fromkeys(r["runtime"] for r in rs if r["model"] == model):
                if runtime == INT8 and (bundle, model) not in INT8_ACCURACY:
                    continue  # its int8 accuracy is not measured: the latency alone is not listed
                cells = [f"{1000 * c['median_s']:.2f} [{1000 * c['q1_s']:.2f}, {1000 * c['q3_s']:.2f}]"
                         if (c := cell.get((model, runtime, t, b))) else "" for t, b in columns]
                lines.append(f"| {model} | {first['parameters']:,} | {first['macs']:,} | {runtime} | " + " | ".join(cells) + " |")
        students = [m for m in ("student", FAST) if any(r["model"] == m for r in rs)]
        teachers = [m for m in dict.fromkeys(r["model"] for r in rs) if m.startswith("teacher")]
        lines.append("")
        for teacher in teachers:
            for student in students:
                ratios = [f"{t} thread{'s' * (t > 1)} batch {b}: "
                          f"{cell[(teacher, 'eager', t, b)]['median_s'] / cell[(student, 'eager', t, b)]['median_s']:.1f}x"
                          for t, b in columns if (teacher, "eager", t, b) in cell and (student, "eager", t, b) in cell]
                lines.append(f"Eager latency {teacher} / {student}: " + ", ".join(ratios) + ".  ")
        quantised = list(dict.fromkeys(r["model"] for r in rs if r["runtime"] == INT8))
        shown = [m for m in quantised if (bundle, m) in INT8_ACCURACY]
        for model in shown:
            lines.append(f"int8 {model}: accuracy beside this latency in {INT8_ACCURACY[(bundle, model)]}.  ")
        if len(shown) < len(quantised):
            lines.append(f"int8 {', '.join(m for m in quantised if m not in shown)}: measured (JSON) but not listed: "
                         "their int8 accuracy is not measured yet.")
        lines.append("")
    return "\n".join(lines)


def markdown(result: dict, bundles: list[str] | None = None) -> str:
    """The generated section: how it was measured, a busy flag, then :func:`tables`."""
    head = (f"Machine: {result['machine']}; 1-minute load average {result['load_before']:.2f} before, "
            f"{result['load_after']:.2f} after (refused above {result['max_load']}); {result['repeats']} timed passes "
            f"after {result['warmup']} warm-up, median [q1, q3] in ms; random input of the right shape (latency does "
            "not depend on the values), random weights (nor on the weights' values).")
    if result["busy"]:
        head = f"{BUSY_BANNER} A draft for development: other processes shared the CPU.\n\n{head}"
    else:
        head = f"{MEASURED}. {head}"
    return head + "\n\n" + tables(result, bundles)


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
    parser.add_argument("--no-readmes", dest="readmes", action="store_false",
                        help="do not write the latency sections of the bundle READMEs")
    parser.add_argument("--bundles-root", type=Path, default=REPO / "bundles", help="where the bundle READMEs are")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-render the tables of --markdown and the bundle READMEs from --output")
    args = parser.parse_args(argv)
    if args.report_only:
        result = json.loads(args.output.read_text())
        bundles = list(dict.fromkeys(r["bundle"] for r in result["records"]))
        write_sections(result, args.markdown, args.readmes, args.bundles_root, bundles)
        return 0
    load_before = load_average()
    if load_before > args.max_load and not args.allow_busy:
        print(f"refused: the machine is busy (1-minute load average {load_before:.2f} > {args.max_load}); "
              "latency measured now would not be a property of the models. Re-run when idle, or --allow-busy.",
              file=sys.stderr)
        return 3
    started = time.perf_counter()
    records = bench(args.bundles, args.batches, args.threads, args.warmup, args.repeats)
    load_after = load_average()
    runtimes_seen = list(dict.fromkeys(r["runtime"] for r in records))
    result = run_header(
        load_before=load_before, load_after=load_after, max_load=args.max_load,
        # the run's own threads add up to max(threads) to the load it leaves: only load beyond that is another job's
        busy=is_busy(load_before, [load_after], args.max_load, max(args.threads)),
        batches=args.batches, threads=args.threads, runtimes=runtimes_seen, warmup=args.warmup,
        repeats=args.repeats, seconds=time.perf_counter() - started, records=records,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    if not args.markdown.is_file():
        begin, end = markers(MARKER)
        args.markdown.write_text(f"# CPU latency of every bundle's teacher and student\n\nGenerated by "
                                 f"`python scripts/bench_latency.py`; do not edit the table by hand.\n\n{begin}\n{end}\n")
    print(write_sections(result, args.markdown, args.readmes, args.bundles_root, args.bundles))
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


def write_sections(result: dict, markdown_file: Path, readmes: bool, bundles_root: Path, entries: list[str]) -> str:
    """Write the ``latency`` section of ``markdown_file`` and (``readmes``) of every bundle README holding the
    markers, for the bundle ``entries``; a busy run never replaces an idle-machine table. Returns the full table."""
    table = markdown(result)
    if not write_timing_section(markdown_file, table, MARKER, result["busy"], MEASURED):
        print(f"busy run: {markdown_file} keeps its idle-machine table; this run is only in the JSON")
    if readmes:  # bundle READMEs: numbers from an idle machine only
        for entry in entries:
            readme = bundles_root / BUNDLES[entry][0] / "docs" / "README.md"
            if not readme.is_file() or markers(MARKER)[0] not in readme.read_text():
                continue
            same = [e for e in entries if BUNDLES[e][0] == BUNDLES[entry][0]]
            if result["busy"]:
                text = busy_section(f"Latency of {', '.join(same)}: not measured on an idle machine yet.",
                                    result["max_load"], "python scripts/bench_latency.py")
            else:
                text = markdown(result, same)
            write_timing_section(readme, text, MARKER, result["busy"], MEASURED)
    return table


if __name__ == "__main__":
    sys.exit(main())
