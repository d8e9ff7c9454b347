"""Evidence for the baseline KD bundle: teacher vs student alone vs KD student, paired by seed, on real data.

For every dataset and seed the script trains, through ``bundles/kd/configs/train.json`` (exactly what users run):
the teacher, the student alone and the KD student. The student alone and the KD student share the seed, so they
start from the same weights and see the same data order and augmentations.

Rules fixed before looking at any test number:
- every model is the SWA average of the last half of its epochs (no checkpoint picking);
- temperature and KD weight come from a small grid run on seed 0 and are chosen by the lowest *validation*
  negative log-likelihood of the KD student (validation AUC saturates on PneumoniaMNIST, NLL still discriminates);
  the chosen pair is then used for every seed;
- test metrics are computed once per trained model and never feed back into any choice.

Writes ``bundles/kd/docs/results.json`` (``runs``: one record per trained model with ``dataset``, ``model``
(``teacher``/``student_alone``/``student_kd``), ``seed``, ``accuracy``, ``auc`` and more) and the Markdown tables
between the ``<!-- results:begin -->``/``<!-- results:end -->`` markers of ``bundles/kd/docs/README.md``; with
``docs/results_before_correctness.json`` beside it (the records of the run before the correctness fixes), a table
of how each mean moved. Resumable: each record is written as soon as its model is evaluated and skipped when
present, and stages whose checkpoint exists are not retrained. Latency is not measured here (a training machine
is busy, so its timings would not be honest); latency belongs to a benchmark run on an idle machine.

Paired gains carry their 95% confidence interval: the Student-t interval over seeds of the per-seed differences
(``monai_kd.evidence``; ``monai-kd results BUNDLE`` prints the same intervals).

Example::

    python scripts/kd_evidence.py --seeds 0 1 2 --datasets pneumoniamnist breastmnist
    python scripts/kd_evidence.py --report-only     # re-render the tables from docs/results.json, no training
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from monai_kd.evidence import (SPECS, RecordStore, check_seeds, ci_note, evidence_parser, mean_std, paired,
                               protocol_text, run_bundle, run_stage, setup_logging)
from monai_kd.evidence.evaluate import evaluate_bundle
from monai_kd.reporting import changes_table, markers, write_section

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "kd"
CONFIG = str(BUNDLE / "configs" / "train.json")
EVALUATE = str(BUNDLE / "configs" / "evaluate.json")
METRICS = {"test_acc": "accuracy", "test_auc": "auc", "test_nll": "nll", "test_ece": "ece"}  # evaluate.json -> record
META = str(BUNDLE / "configs" / "metadata.json")
DATA = REPO.parent / "shared" / "data"
GRID = [(4.0, 0.9), (4.0, 0.5), (2.0, 0.5)]  # (temperature, kd_weight); Hinton's default first
DATASET_OVERRIDES = {"pneumoniamnist": {}, "breastmnist": {"batch_size": 32}}  # ~same number of steps per run
MARK_BEGIN, MARK_END = markers()

logger = logging.getLogger("kd_evidence")


def _train(stage: str, root: Path, dataset: str, seed: int, ckpt: Path, **override) -> None:
    """One stage of ``train.json`` into ``root``, skipped when its checkpoint ``ckpt`` exists."""
    run_stage(root, functools.partial(run_bundle, stage, CONFIG, root, meta_file=META, dataset_dir=str(DATA / dataset),
                                      seed=seed, **DATASET_OVERRIDES[dataset], **override),
              done=ckpt, name=f"{dataset} {stage} seed {seed}")


def _evaluate(root: Path, dataset: str, seed: int, splits: tuple[str, ...] = ("test", "val"), **ckpts: str) -> dict:
    """Every model's scores through the bundle's ``evaluate.json`` (as ``monai-kd evaluate`` runs it) into ``root``.

    Returns ``{model: {accuracy, auc, nll, ece, val_accuracy, val_auc, val_nll, val_ece, parameters}}`` (the keys of
    the splits evaluated); ``ckpts`` are the checkpoints (``teacher_ckpt``, ``student_alone_ckpt``, ``student_ckpt``).
    """
    common = {"meta_file": META, "dataset_dir": str(DATA / dataset), "seed": seed, **DATASET_OVERRIDES[dataset], **ckpts}
    found: dict[str, dict] = {}
    for split in splits:
        prefix = "" if split == "test" else f"{split}_"
        metrics = evaluate_bundle([CONFIG, EVALUATE], root, f"{prefix}metrics.json", eval_split=split, **common)
        for model, m in metrics.items():
            found.setdefault(model, {}).update({prefix + name: m[key] for key, name in METRICS.items()})
    for model, m in metrics.items():
        found[model]["parameters"] = m["parameters"]
    return found


def _key(record: dict) -> tuple:
    return record["dataset"], record["model"], record["seed"]


def run_dataset(dataset: str, seeds: list[int], work: Path, grid: list[tuple[float, float]], store: RecordStore) -> None:
    """Train and evaluate every model of ``dataset``, adding each record to ``store`` (saved at once)."""
    results = store.results
    selection = results["selection"].setdefault(dataset, {"rule": "lowest validation NLL of the KD student, seed 0", "grid": []})
    for seed in seeds:
        models = ("teacher", "student_alone", "student_kd")
        if all(store.recorded({"dataset": dataset, "model": m, "seed": seed}) for m in models) and "chosen" in selection:
            logger.info("skip %s seed %d (recorded)", dataset, seed)
            continue
        root = work / dataset / f"seed{seed}"
        ckpts = root / "models"
        teacher_ckpt = ckpts / "teacher.pt"
        _train("run_teacher", root, dataset, seed, teacher_ckpt)
        _train("run_student_alone", root, dataset, seed, ckpts / "student_alone.pt")
        if "chosen" not in selection:
            for tau, alpha in grid:
                sub = root / f"kd_tau{tau:g}_w{alpha:g}"
                _train("run_student", sub, dataset, seed, sub / "models" / "model.pt",
                       temperature=tau, kd_weight=alpha, teacher_ckpt=str(teacher_ckpt))
                val_nll = _evaluate(sub, dataset, seed, ("val",), teacher_ckpt=str(teacher_ckpt),
                                    student_alone_ckpt=str(ckpts / "student_alone.pt"),
                                    student_ckpt=str(sub / "models" / "model.pt"))["student_kd"]["val_nll"]
                selection["grid"].append({"temperature": tau, "kd_weight": alpha, "val_nll": val_nll})
            best = min(selection["grid"], key=lambda g: g["val_nll"])
            selection["chosen"] = {"temperature": best["temperature"], "kd_weight": best["kd_weight"]}
            store.save()
        tau, alpha = selection["chosen"]["temperature"], selection["chosen"]["kd_weight"]
        kd_root = root / f"kd_tau{tau:g}_w{alpha:g}"
        _train("run_student", kd_root, dataset, seed, kd_root / "models" / "model.pt",
               temperature=tau, kd_weight=alpha, teacher_ckpt=str(teacher_ckpt))
        scores = None
        for model in ("teacher", "student_alone", "student_kd"):
            base = {"dataset": dataset, "model": model, "seed": seed}
            if store.recorded(base):
                continue
            scores = scores or _evaluate(kd_root, dataset, seed, teacher_ckpt=str(teacher_ckpt),
                                         student_alone_ckpt=str(ckpts / "student_alone.pt"),
                                         student_ckpt=str(kd_root / "models" / "model.pt"))
            rec = {**base, **scores[model]}
            if model == "student_kd":
                rec.update(temperature=tau, kd_weight=alpha)
            store.record(rec)


def _mean_std(values: list[float]) -> str:
    return mean_std(values)


def markdown(results: dict) -> str:
    """Tables of test accuracy/AUC (mean ± std over seeds), paired AUC gains and what the correctness fixes changed."""
    lines = []
    runs = results["runs"]
    for dataset in sorted({r["dataset"] for r in runs}):
        rs = [r for r in runs if r["dataset"] == dataset]
        if {r["model"] for r in rs} != {"teacher", "student_alone", "student_kd"} or dataset not in results["selection"]:
            continue  # not all models recorded yet
        seeds = sorted({r["seed"] for r in rs})
        sel = results["selection"][dataset]
        lines += [f"### {dataset} (test split, {len(seeds)} seeds: {seeds})", "",
                  "| model | parameters | test accuracy | test AUC | test NLL | val AUC | val NLL |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for model in ("teacher", "student_alone", "student_kd"):
            m = [r for r in rs if r["model"] == model]
            lines.append(f"| {model} | {m[0]['parameters']:,} | {_mean_std([r['accuracy'] for r in m])} | "
                         f"{_mean_std([r['auc'] for r in m])} | {_mean_std([r['nll'] for r in m])} | "
                         f"{_mean_std([r['val_auc'] for r in m])} | {_mean_std([r['val_nll'] for r in m])} |")
        gain = paired(SPECS["kd"], runs, dataset, "student_kd", "student_alone", "auc")
        gains, wins = list(gain.differences), gain.wins
        grid = ", ".join(f"tau {g['temperature']:g} / w {g['kd_weight']:g}: {g['val_nll']:.4f}" for g in sel["grid"])
        lines += ["", f"Paired test-AUC gain of KD over the student alone: {_mean_std(gains)}{ci_note(gain)} (KD better on {wins}/{len(seeds)} seeds).",
                  f"Grid on seed 0 (validation NLL of the KD student): {grid}; chosen: tau {sel['chosen']['temperature']:g}, "
                  f"KD weight {sel['chosen']['kd_weight']:g}.", ""]
    before = results.get("before_correctness", [])
    changed = changes_table(before, runs, lambda r: (r["dataset"], r["model"]),
                            {"test accuracy": lambda r: r["accuracy"], "test AUC": lambda r: r["auc"]},
                            lambda g: f"{g[0]} {g[1]}")
    if changed:
        lines += ["### What the correctness fixes changed", "",
                  "Means over seeds before the fixes of BatchNorm statistics in weight averaging (and the other "
                  "defects of the correctness pass) and after, same seeds and protocol:", "", changed, ""]
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> None:
    parser = evidence_parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"], choices=sorted(DATASET_OVERRIDES))
    parser.add_argument("--work", type=Path, default=REPO / "scripts" / "_work" / "kd", help="checkpoints and logs")
    parser.add_argument("--output", type=Path, default=BUNDLE / "docs" / "results.json")
    parser.add_argument("--readme", type=Path, default=BUNDLE / "docs" / "README.md")
    args = parser.parse_args(argv)
    if not args.report_only:
        check_seeds(parser, args.seeds, "use at least 3 seeds: single-seed accuracy on these sets swings by 0.02-0.08")
    setup_logging()
    store = RecordStore(args.output, _key, defaults={"selection": {}})
    results = store.results
    if not args.report_only:
        results["protocol"] = protocol_text(__doc__)
        results["seeds"] = args.seeds
        for dataset in args.datasets:
            run_dataset(dataset, args.seeds, args.work, GRID, store)
        store.save()
    before = args.output.with_name("results_before_correctness.json")
    if before.is_file():
        results["before_correctness"] = json.loads(before.read_text())["runs"]
    table = markdown(results)
    write_section(args.readme, table)
    print(table)


if __name__ == "__main__":
    main()
