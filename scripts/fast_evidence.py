"""Evidence for latency-aware and int8 students: accuracy of every fast or quantised student, paired by seed.

For every dataset and seed the script trains, through the ``kd`` bundle's ``train.json`` with
``student_fast.json`` layered over it (exactly what users run):
- ``fast_alone``: the fast student (``monai_kd.networks.FastStudent``) trained alone;
- ``fast_kd``: the fast student distilled from the bundle's teacher (the ResNet-18 of ``train.json``);
- ``fast_kd_qat``: the same with ``student_qat.json`` layered on top: quantisation-aware distillation, the teacher
  supervises the fake-quantised student;
and, from each of them, an int8 model (``*_int8``): the float student exported to ONNX and quantised by ONNX Runtime
(``quantize_static``, QDQ, per-channel int8 weights, activation ranges calibrated on 256 training images drawn with
the seed); the QAT student's float weights (BatchNorm unfolded, fake quantisation stripped) are quantised the same
way. The teacher is the kd evidence's teacher of the same dataset and seed (``--teacher-work``, same config and
seed, hence the same model) when its checkpoint exists, else it is trained here with the same stage.

The kd protocol, fixed before looking at any test number:
- every model is the SWA average of the last half of its epochs (no checkpoint picking);
- temperature and KD weight are those chosen in ``bundles/kd/docs/results.json`` ``selection`` for the dataset
  (lowest validation NLL of the KD student, seed 0); where the kd evidence has not chosen yet, the same grid is run
  on seed 0 with the fast student and chosen by the same rule (recorded in this file's ``selection``);
- test metrics are computed once per model and never feed back into any choice; int8 models are evaluated by ONNX
  Runtime on the same images, with their agreement with the fp32 model's predicted class.

Writes ``bundles/kd/docs/results_fast.json`` (``runs``: one record per model with ``dataset``, ``model``, ``seed``,
``accuracy``, ``auc``, ``nll``, ``ece``, ``val_*``, ``parameters``, ``macs``) and the tables between the
``<!-- fast:begin -->``/``<!-- fast:end -->`` markers of ``bundles/kd/docs/README.md``, with each model's latency
beside its accuracy taken from ``docs/bench_latency.json`` (``scripts/bench_latency.py``; a busy benchmark is
flagged, never shown as a result). Resumable: each record is written as soon as its model is evaluated and skipped
when present, and stages whose checkpoint exists are not retrained. No latency is measured here: a training machine
is busy.

Example::

    nice -n 5 python scripts/fast_evidence.py --seeds 0 1 2 --datasets breastmnist pneumoniamnist
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser, run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import kd_evidence as kd  # noqa: E402  (the kd protocol: grid, dataset overrides, metrics)

from monai_kd.data import medmnist_datalist  # noqa: E402
from monai_kd.networks import load_pretrained  # noqa: E402
from monai_kd.quantization import calibration_images, export_onnx, fake_quantized, OnnxNetwork  # noqa: E402
from monai_kd.quantization import quantize_onnx, strip_fake_quant  # noqa: E402
from monai_kd.reporting import busy_latency_note, latency_ms, write_section  # noqa: E402
from monai_kd.results_file import save_merged_results  # noqa: E402

BUNDLE = REPO / "bundles" / "kd"
CONFIGS = {
    "teacher": [str(BUNDLE / "configs" / "train.json")],
    "fast": [str(BUNDLE / "configs" / f) for f in ("train.json", "student_fast.json")],
    "qat": [str(BUNDLE / "configs" / f) for f in ("train.json", "student_fast.json", "student_qat.json")],
}
INPUT_SHAPE = (1, 28, 28)
MODELS = ("teacher", "fast_alone", "fast_kd", "fast_kd_qat", "fast_alone_int8", "fast_kd_int8", "fast_kd_qat_int8")
MARKER = "fast"

logger = logging.getLogger("fast_evidence")


def _train(stage: str, configs: str, root: Path, dataset: str, seed: int, ckpt: Path, **override) -> None:
    if ckpt.is_file():
        logger.info("skip %s (%s exists)", stage, ckpt)
        return
    start = time.perf_counter()
    run(stage, config_file=CONFIGS[configs], meta_file=kd.META, bundle_root=str(root),
        dataset_dir=str(kd.DATA / dataset), seed=seed, **kd.DATASET_OVERRIDES[dataset], **override)
    logger.info("%s %s (%s) seed %d: %.0f s", dataset, stage, configs, seed, time.perf_counter() - start)


def _network(configs: str, key: str = "network_def") -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(CONFIGS[configs])
    return parser.get_parsed_content(key)


def _float_student(ckpt: Path, qat: bool) -> torch.nn.Module:
    """The trained fast student as a float network (a QAT student: fake quantisation stripped)."""
    if not qat:
        return load_pretrained(_network("fast"), ckpt).eval()
    trained = load_pretrained(fake_quantized(_network("fast"), True, INPUT_SHAPE), ckpt)
    return strip_fake_quant(trained, _network("fast"))


def _macs(net: torch.nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(torch.zeros(1, *INPUT_SHAPE))
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def _predicted(net: torch.nn.Module, dataset: str, split: str) -> torch.Tensor:
    x = torch.as_tensor(np.stack([i["image"] for i in medmnist_datalist(kd.DATA / dataset, split)]))
    return torch.cat([net(x[i : i + 512]) for i in range(0, len(x), 512)]).argmax(dim=1)


def _evaluate(net: torch.nn.Module, dataset: str, parameters: int, macs: int) -> dict:
    val = {f"val_{k}": v for k, v in kd._metrics(net, dataset, "val").items()}
    return {**kd._metrics(net, dataset, "test"), **val, "parameters": parameters, "macs": macs}


def _int8(float_net: torch.nn.Module, folder: Path, dataset: str, seed: int) -> OnnxNetwork:
    """Export ``float_net`` to ONNX and quantise it to int8 (static, calibrated on training images)."""
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(float_net, INPUT_SHAPE, folder / "model.onnx")
    images = (i["image"] for i in medmnist_datalist(kd.DATA / dataset, "train"))
    int8 = quantize_onnx(fp32, folder / "model_int8.onnx", calibration_images(images, 256, seed))
    return OnnxNetwork(int8, threads=1)


def _key(record: dict) -> tuple:
    return record["dataset"], record["model"], record["seed"]


def _selection(dataset: str, root: Path, teacher_ckpt: Path, seed: int, results: dict, output: Path) -> tuple[float, float]:
    """Temperature and KD weight: the kd evidence's choice, or the same grid and rule run here on the first seed."""
    kd_results = kd.BUNDLE / "docs" / "results.json"
    chosen = json.loads(kd_results.read_text()).get("selection", {}).get(dataset, {}).get("chosen") if kd_results.is_file() else None
    selection = results["selection"].setdefault(dataset, {})
    if "chosen" in selection:  # fixed once: every seed of a dataset uses the same pair
        pass
    elif chosen:
        selection.update(source="bundles/kd/docs/results.json (kd evidence, ResNet student)", chosen=chosen)
    else:
        selection.update(source="this script: the kd grid on seed 0 with the fast student",
                         rule=f"lowest validation NLL of the KD student, seed {seed}", grid=[])
        for tau, alpha in kd.GRID:
            sub = root / f"fast_kd_tau{tau:g}_w{alpha:g}"
            _train("run_student", "fast", sub, dataset, seed, sub / "models" / "model.pt",
                   temperature=tau, kd_weight=alpha, teacher_ckpt=str(teacher_ckpt))
            net = _float_student(sub / "models" / "model.pt", qat=False)
            selection["grid"].append({"temperature": tau, "kd_weight": alpha,
                                      "val_nll": kd._metrics(net, dataset, "val")["nll"]})
        best = min(selection["grid"], key=lambda g: g["val_nll"])
        selection["chosen"] = {"temperature": best["temperature"], "kd_weight": best["kd_weight"]}
    save_merged_results(output, results, _key)
    return selection["chosen"]["temperature"], selection["chosen"]["kd_weight"]


def run_dataset(
    dataset: str, seeds: list[int], work: Path, teacher_work: Path, results: dict, output: Path, train_teachers: bool = True
) -> None:
    """Train and evaluate every model of ``dataset``, adding each record to ``results`` and ``output`` at once."""
    for seed in seeds:
        done = {_key(r) for r in results["runs"]}
        if all((dataset, m, seed) in done for m in MODELS):
            logger.info("skip %s seed %d (recorded)", dataset, seed)
            continue
        root = work / dataset / f"seed{seed}"
        teacher_ckpt = teacher_work / dataset / f"seed{seed}" / "models" / "teacher.pt"
        if not teacher_ckpt.is_file():
            teacher_ckpt = root / "models" / "teacher.pt"
            if not teacher_ckpt.is_file() and not train_teachers:
                logger.info("skip %s seed %d: no teacher in %s and --reuse-teachers-only", dataset, seed, teacher_work)
                continue
            _train("run_teacher", "teacher", root, dataset, seed, teacher_ckpt)
        tau, alpha = _selection(dataset, root, teacher_ckpt, seed, results, output)
        kd_override = {"temperature": tau, "kd_weight": alpha, "teacher_ckpt": str(teacher_ckpt)}
        ckpts = {
            "fast_alone": root / "fast" / "models" / "student_alone.pt",
            "fast_kd": root / f"fast_kd_tau{tau:g}_w{alpha:g}" / "models" / "model.pt",
            "fast_kd_qat": root / f"fast_kd_qat_tau{tau:g}_w{alpha:g}" / "models" / "model.pt",
        }
        _train("run_student_alone", "fast", root / "fast", dataset, seed, ckpts["fast_alone"])
        _train("run_student", "fast", ckpts["fast_kd"].parents[1], dataset, seed, ckpts["fast_kd"], **kd_override)
        _train("run_student", "qat", ckpts["fast_kd_qat"].parents[1], dataset, seed, ckpts["fast_kd_qat"], **kd_override)

        def record(model: str, net: torch.nn.Module, parameters: int, macs: int, **extra) -> None:
            if (dataset, model, seed) in done:
                return
            rec = {"dataset": dataset, "model": model, "seed": seed, **_evaluate(net, dataset, parameters, macs), **extra}
            if model.startswith("fast_kd"):
                rec.update(temperature=tau, kd_weight=alpha)
            results["runs"].append(rec)
            save_merged_results(output, results, _key)
            logger.info("%s", rec)

        teacher = load_pretrained(_network("teacher", "teacher_def"), teacher_ckpt).eval()
        record("teacher", teacher, sum(p.numel() for p in teacher.parameters()), _macs(teacher),
               teacher_ckpt=str(teacher_ckpt.relative_to(REPO)) if teacher_ckpt.is_relative_to(REPO) else str(teacher_ckpt))
        for model, ckpt in ckpts.items():
            qat = model.endswith("_qat")
            fp32 = _float_student(ckpt, qat)
            params, macs = sum(p.numel() for p in fp32.parameters()), _macs(fp32)
            if qat:  # the trained graph: fake-quantised, as the teacher supervised it
                trained = load_pretrained(fake_quantized(_network("fast"), True, INPUT_SHAPE), ckpt).eval()
                record(model, trained, params, macs, fake_quantised=True)
            else:
                record(model, fp32, params, macs)
            if (dataset, f"{model}_int8", seed) not in done:
                int8 = _int8(fp32, ckpt.parent / "onnx", dataset, seed)
                agreement = (_predicted(int8, dataset, "test") == _predicted(fp32, dataset, "test")).float().mean().item()
                record(f"{model}_int8", int8, params, macs, runtime="onnxruntime int8 (static, QDQ)",
                       agreement_with_fp32=agreement)


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


#: model of this script -> (model, runtime) of ``scripts/bench_latency.py``'s ``kd`` records
LATENCY_OF = {
    "teacher": ("teacher", "eager"), "fast_alone": ("student_fast", "eager"), "fast_kd": ("student_fast", "eager"),
    "fast_kd_qat": ("student_fast", "eager"), "fast_alone_int8": ("student_fast", "onnxruntime_int8"),
    "fast_kd_int8": ("student_fast", "onnxruntime_int8"), "fast_kd_qat_int8": ("student_fast", "onnxruntime_int8"),
}


def _latency(bench: dict | None, model: str, batch: int) -> str:
    name, runtime = LATENCY_OF[model]
    return latency_ms(bench, "kd", name, runtime, batch)


def markdown(results: dict, bench: dict | None) -> str:
    """Accuracy of every fast / int8 student beside its one-thread latency; paired gains by seed."""
    lines = busy_latency_note(bench, "python scripts/fast_evidence.py --report-only")
    runs = results["runs"]
    for dataset in sorted({r["dataset"] for r in runs}):
        rs = [r for r in runs if r["dataset"] == dataset]
        by = {(r["model"], r["seed"]): r for r in rs}
        seeds = sorted({r["seed"] for r in rs if all((m, r["seed"]) in by for m in MODELS)})
        if not seeds:
            continue
        sel = results["selection"].get(dataset, {}).get("chosen", {})
        partial = [f"**Partial: {len(seeds)} of the 3 seeds the protocol asks for; the run is resumable.**", ""] \
            if len(seeds) < 3 else []
        lines += [f"### {dataset}: fast and int8 students (test split, {len(seeds)} complete seeds: {seeds})", "", *partial,
                  "| model | parameters | MACs | test accuracy | test AUC | test NLL | agreement with fp32 | "
                  "latency b64, 1 thread (ms) | latency b1, 1 thread (ms) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for model in MODELS:
            m = [by[(model, s)] for s in seeds]
            agree = _mean_std([r["agreement_with_fp32"] for r in m]) if "agreement_with_fp32" in m[0] else ""
            lines.append(f"| {model} | {m[0]['parameters']:,} | {m[0]['macs']:,} | {_mean_std([r['accuracy'] for r in m])} | "
                         f"{_mean_std([r['auc'] for r in m])} | {_mean_std([r['nll'] for r in m])} | {agree} | "
                         f"{_latency(bench, model, 64)} | {_latency(bench, model, 1)} |")

        def gain(a: str, b: str) -> str:
            g = [by[(a, s)]["auc"] - by[(b, s)]["auc"] for s in seeds]
            return f"{_mean_std(g)} ({a} higher on {sum(x > 0 for x in g)}/{len(seeds)} seeds)"

        lines += ["", f"Paired test-AUC differences: KD over alone {gain('fast_kd', 'fast_alone')}; "
                  f"fast KD student minus teacher {gain('fast_kd', 'teacher')}; int8 minus fp32 {gain('fast_kd_int8', 'fast_kd')}; "
                  f"QAT int8 minus fp32 {gain('fast_kd_qat_int8', 'fast_kd')}. KD temperature {sel.get('temperature')}, "
                  f"weight {sel.get('kd_weight')} ({results['selection'][dataset].get('source')}).", ""]
    return "\n".join(lines) if lines else "No dataset has every model recorded yet (the run is resumable)."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"], choices=sorted(kd.DATASET_OVERRIDES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / "scripts" / "_work" / "fast", help="checkpoints")
    parser.add_argument("--teacher-work", type=Path, default=REPO / "scripts" / "_work" / "kd",
                        help="kd evidence work folder whose teachers are reused (same config and seed)")
    parser.add_argument("--reuse-teachers-only", action="store_true",
                        help="skip a seed whose teacher is not in --teacher-work or --work instead of training it")
    parser.add_argument("--output", type=Path, default=BUNDLE / "docs" / "results_fast.json")
    parser.add_argument("--readme", type=Path, default=BUNDLE / "docs" / "README.md")
    parser.add_argument("--bench", type=Path, default=REPO / "docs" / "bench_latency.json")
    parser.add_argument("--report-only", action="store_true", help="regenerate the README section, train nothing")
    args = parser.parse_args(argv)
    if len(args.seeds) < 3 and not args.report_only:
        parser.error("use at least 3 seeds: single-seed accuracy on these sets swings by 0.02-0.08")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results.setdefault("runs", [])
    results.setdefault("selection", {})
    results["protocol"] = __doc__.split("Writes")[0].strip()
    if not args.report_only:
        for dataset in args.datasets:
            run_dataset(dataset, args.seeds, args.work, args.teacher_work, results, args.output, not args.reuse_teachers_only)
    save_merged_results(args.output, results, _key)
    bench = json.loads(args.bench.read_text()) if args.bench.is_file() else None
    table = markdown(results, bench)
    write_section(args.readme, table, MARKER)
    print(table)


if __name__ == "__main__":
    main()
