"""Evidence for the WeCKD bundle: a distillation chain against the three fair baselines, paired by seed, on real data.

For every dataset, per-link label fraction (5%, 10%, 25% of the training split) and seed, the script partitions the
training split into three disjoint, class-stratified labelled subsets D1, D2, D3 (``chain_partition``, seeded by the
run's seed) and trains, through ``bundles/weckd/configs/train.json`` (exactly what users run), four methods whose
last model has the same architecture (the 77k-parameter ResNet of every link):

- ``chain``: M1 on D1 (labels), M2 on D2 (labels + KD from M1), M3 on D3 (labels + KD from M2); every link recorded;
- ``single_backbone_same_data``: one backbone on D3 alone, labels only (the paper's baseline);
- ``one_step_kd``: a teacher on D1 + D2 (the labels the chain's earlier links saw, pooled), then one student on D3 with
  labels + KD from it: the same labelled data and KD terms as the chain, distilled in one step instead of two;
- ``single_backbone_union``: one backbone on D1 + D2 + D3 with labels only (the paper does not report it).

Rules fixed before looking at any test number:
- every model is the SWA average of the last half of its epochs (no checkpoint picking); every link trains for
  ``max(max_epochs, ceil(min_iterations / batches per epoch))`` epochs, so tiny fractions still get enough steps;
- the KD terms (temperature, KD weight) come from a grid run on seed 0 of each dataset and fraction and are chosen by
  the lowest *validation* negative log-likelihood of the chain's last link (validation AUC saturates on
  PneumoniaMNIST, NLL still discriminates); the chosen pair is used for every seed, for the chain and for one-step KD;
- test metrics are computed once per trained model and never feed back into any choice.

The fast-student arm (``--student fast``, :class:`FastEvidence`): the same protocol with ``configs/student_fast.json``
layered over ``train.json`` and ``evaluate.json``, so every link and every baseline is the 13k-parameter
``FastStudent`` (what a user runs with that overlay); only ``chain`` and ``single_backbone_same_data`` (the paper's
comparison), with the KD terms the main evidence chose on validation for the cell (its ``selection``; a cell it has
not chosen runs the same grid and rule with the fast student). The chain has no separate teacher (its links are
students of the same architecture), so nothing of the main run is reused but its choices. Records carry
``student: "fast"``.

Writes ``bundles/weckd/docs/results.json`` (``runs``: one record per model with ``dataset``, ``fraction``, ``link``,
``method``, ``seed``, ``accuracy``, ``auc`` (test) and more; for the baselines ``link`` is the chain position whose
model they are compared with, 3), ``selection`` (the grids), the chain plot ``bundles/weckd/docs/chain.png`` and the
tables between the ``<!-- results:begin -->``/``<!-- results:end -->`` markers of ``bundles/weckd/docs/README.md``.
Resumable: finished links and models are reused from their checkpoints, recorded runs are not evaluated again.
The fast arm writes ``bundles/weckd/docs/results_fast.json`` (same record fields plus ``student``) and the table
between the ``<!-- fast:begin -->``/``<!-- fast:end -->`` markers, each row beside its one-thread latency from
``docs/bench_latency.json`` (``scripts/bench_latency.py``, entry ``weckd``), with the default student's rows of
``results.json`` for comparison.

Paired gains carry their 95% confidence interval: the Student-t interval over seeds of the per-seed differences
(``monai_kd.evidence``; ``monai-kd results BUNDLE`` prints the same intervals).

Example::

    python scripts/weckd_evidence.py --datasets pneumoniamnist breastmnist --seeds 0 1 2
    python scripts/weckd_evidence.py --report-only  # re-render the tables and the plot from results.json
    python scripts/weckd_evidence.py --student fast --datasets pneumoniamnist breastmnist --seeds 0 1 2
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import statistics
from pathlib import Path
from typing import Any

from monai_kd.evidence import (RecordStore, check_seeds, ci, ci_note, evidence_parser, mean_std, protocol_text,
                               run_bundle, run_stage, setup_logging, signed_mean_std, t_interval)
from monai_kd.evidence.evaluate import evaluate_bundle
from monai_kd.reporting import accuracy_latency_table, busy_latency_note, render_fast_section, write_section

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "weckd"
CONFIG = str(BUNDLE / "configs" / "train.json")
EVALUATE = str(BUNDLE / "configs" / "evaluate.json")
METRICS = {"test_acc": "accuracy", "test_auc": "auc", "test_nll": "nll", "test_ece": "ece"}  # evaluate.json -> record
META = str(BUNDLE / "configs" / "metadata.json")
DATA = REPO.parent / "shared" / "data"
FRACTIONS = [0.05, 0.10, 0.25]
CHAIN_LENGTH = 3
GRID = [(4.0, 0.5), (4.0, 0.9), (2.0, 0.5)]  # (temperature, kd_weight)
DATASETS = {
    "pneumoniamnist": {"dataset_dir": str(DATA / "pneumoniamnist")},
    "breastmnist": {"dataset_dir": str(DATA / "breastmnist")},
}
METHODS = ["chain", "single_backbone_same_data", "one_step_kd", "single_backbone_union"]
FAST_OVERLAY = str(BUNDLE / "configs" / "student_fast.json")
FAST_METHODS = ["chain", "single_backbone_same_data"]  # the fast arm: the method against the paper's comparison
UNION = "monai.data.Dataset(monai_kd.engines.merge_datalists(@link_datalists{}), transform=@train#preprocessing)"
LAST = "monai.data.Dataset(@link_datalists[-1], transform=@train#preprocessing)"
# bundle overrides that turn the chain / student_alone stages into the baselines (same code path, other data):
# method -> (stage, file stem of its checkpoints, overrides)
BASELINES = {
    "single_backbone_same_data": ("run_student_alone", "student_alone", {}),
    "single_backbone_union": ("run_student_alone", "union", {
        "student_alone#trainer#datasets": f"$[{UNION.format('')}]", "student_alone#trainer#name": "union"}),
    "one_step_kd": ("run_student", "one_step", {
        "train#dataset": f"$[{UNION.format('[:-1]')}, {LAST}]", "link_networks": "$[@network_def] * 2",
        "train#trainer#name": "one_step"}),
}

def _key(record: dict) -> tuple:
    return record["dataset"], record["fraction"], record["method"], record["seed"], record["link"]


logger = logging.getLogger("weckd_evidence")


class Evidence:
    """Runs, resumable bookkeeping and the results file.

    Args:
        output: ``results.json`` to read (if present) and write.
        work: folder of the checkpoints.
        overrides: extra bundle overrides for every run (e.g. shorter training for a smoke test).
        datasets: the datasets this process runs; it keeps only their ``selection`` entries in memory, so a
            process running another dataset never writes back a stale copy of this one's (see ``save``).
    """

    #: the methods of every cell (``chain`` first: the baselines use the KD terms chosen for it)
    methods: list[str] = METHODS
    #: config files layered over ``train.json`` and ``evaluate.json`` in every run and evaluation
    overlays: tuple[str, ...] = ()
    #: fields added to every record
    tag: dict[str, Any] = {}

    def __init__(self, output: Path, work: Path, overrides: dict[str, Any] | None = None,
                 datasets: list[str] | None = None) -> None:
        self.output, self.work, self.overrides = output, work, dict(overrides or {})
        self.datasets = set(datasets or DATASETS)
        self.store = RecordStore(output, _key, defaults={"protocol": protocol_text(__doc__), "selection": {}})
        self.results = self.store.results
        self._prune()

    def _prune(self) -> None:
        selection = self.results["selection"]
        for cell in [c for c in selection if c.split("/")[0] not in self.datasets]:
            del selection[cell]

    def save(self) -> None:
        """Merge with what other processes wrote (under a lock) and write; then forget the other datasets' choices."""
        self.store.save()
        self._prune()

    def recorded(self, dataset: str, fraction: float, method: str, seed: int, link: int) -> bool:
        return (dataset, fraction, method, seed, link) in self.store.done

    def evaluate(self, dataset: str, ckpt: Path) -> dict[str, float]:
        """Test metrics and ``val_*`` metrics of one checkpoint, through the bundle's ``evaluate.json``.

        Its ``run_checkpoint`` evaluates the file ``ckpt`` (a chain link or a baseline) into the run folder holding it
        (``<run>/eval/metrics.json`` and ``val_metrics.json``, entry ``ckpt``'s stem): accuracy, ROC AUC, NLL and
        the expected calibration error.
        """
        root = ckpt.parent.parent
        scores: dict[str, float] = {}
        for split in ("test", "val"):
            prefix = "" if split == "test" else f"{split}_"
            metrics = evaluate_bundle([CONFIG, EVALUATE, *self.overlays], root, f"{prefix}metrics.json",
                                      run_id="run_checkpoint", eval_checkpoint=str(ckpt), eval_split=split, meta_file=META,
                                      **DATASETS[dataset])[ckpt.stem]
            scores.update({prefix + name: metrics[key] for key, name in METRICS.items()})
        return scores

    def train(self, stage: str, root: Path, dataset: str, fraction: float, seed: int, **override: Any) -> None:
        """One bundle stage, skipped once its run folder holds ``done.json``; a folder without it is resumed, not
        removed: finished links inside (and a link 1 shared between grid points) are reused by the chain runner."""
        run_stage(root, functools.partial(run_bundle, stage, [CONFIG, *self.overlays], root, meta_file=META, seed=seed,
                                          link_fraction=fraction, chain_length=CHAIN_LENGTH, **DATASETS[dataset],
                                          **self.overrides, **override),
                  clean=False, name=f"{dataset} {stage} fraction {fraction:g} seed {seed} in {root.name}",
                  info={"stage": stage, "override": override})

    def record(self, dataset: str, fraction: float, method: str, seed: int, link: int, ckpt: Path, **extra: Any) -> None:
        if self.recorded(dataset, fraction, method, seed, link):
            return
        rec = {"dataset": dataset, "fraction": fraction, "link": link, "method": method, "seed": seed,
               **self.evaluate(dataset, ckpt), **extra, **self.tag}
        self.store.record(rec)
        self._prune()

    def chain(self, root: Path, dataset: str, fraction: float, seed: int, tau: float, alpha: float) -> Path:
        """Train (or reuse) the chain with KD terms (tau, alpha); return its checkpoint folder."""
        sub = root / f"chain_tau{tau:g}_w{alpha:g}"
        first = next((d for d in sorted(root.glob("chain_tau*")) if (d / "models" / "link_1.pt").is_file()), None)
        if first is not None and first != sub and not (sub / "models" / "link_1.pt").is_file():
            # link 1 learns from labels only, so every grid point shares it: reuse it through the runner's resume
            (sub / "models").mkdir(parents=True, exist_ok=True)
            shutil.copy(first / "models" / "link_1.pt", sub / "models" / "link_1.pt")
            record = json.loads((first / "models" / "link.json").read_text())["links"][0]
            (sub / "models" / "link.json").write_text(json.dumps({"links": [record]}, indent=2))
        self.train("run_student", sub, dataset, fraction, seed, temperature=tau, kd_weight=alpha)
        return sub / "models"

    def run_cell(self, dataset: str, fraction: float, seeds: list[int]) -> None:
        """Every method and seed of one dataset and fraction."""
        cell = f"{dataset}/{fraction:g}"
        selection = self.results["selection"].setdefault(cell, {
            "rule": "lowest validation NLL of the chain's last link, seed 0", "grid": []})
        for seed in seeds:
            root = self.work / dataset / f"fraction{fraction:g}" / f"seed{seed}"
            if "chosen" not in selection:
                if seed != 0:
                    raise RuntimeError(f"{cell}: the KD grid runs on seed 0; run seed 0 of this cell first")
                for tau, alpha in GRID:
                    if any(g["temperature"] == tau and g["kd_weight"] == alpha for g in selection["grid"]):
                        continue
                    models = self.chain(root, dataset, fraction, seed, tau, alpha)
                    val_nll = self.evaluate(dataset, models / f"link_{CHAIN_LENGTH}.pt")["val_nll"]
                    selection["grid"].append({"temperature": tau, "kd_weight": alpha, "val_nll": val_nll})
                    self.save()
                best = min(selection["grid"], key=lambda g: g["val_nll"])
                selection["chosen"] = {"temperature": best["temperature"], "kd_weight": best["kd_weight"]}
                self.save()
            tau, alpha = selection["chosen"]["temperature"], selection["chosen"]["kd_weight"]
            models = self.chain(root, dataset, fraction, seed, tau, alpha)
            links = json.loads((models / "link.json").read_text())["links"]
            for rec in links:
                self.record(dataset, fraction, "chain", seed, rec["link"], models / f"link_{rec['link']}.pt",
                            temperature=tau, kd_weight=alpha, train_items=rec["train_items"], labelled_links=[rec["link"]])
            for method in self.methods[1:]:
                stage, name, override = BASELINES[method]
                kd = {"temperature": tau, "kd_weight": alpha} if method == "one_step_kd" else {}
                self.train(stage, root / name, dataset, fraction, seed, **kd, **override)
                files = root / name / "models"
                last = max(int(p.stem.rsplit("_", 1)[1]) for p in files.glob(f"{name}_*.pt"))
                record = json.loads((files / f"{name}.json").read_text())["links"]
                self.record(dataset, fraction, method, seed, CHAIN_LENGTH, files / f"{name}_{last}.pt", **kd,
                            train_items=sum(r["train_items"] for r in record),
                            labelled_links={"single_backbone_same_data": [3], "one_step_kd": [1, 2, 3],
                                            "single_backbone_union": [1, 2, 3]}[method])


class FastEvidence(Evidence):
    """The fast-student arm: :class:`Evidence` with ``configs/student_fast.json`` over every run and evaluation.

    Runs :data:`FAST_METHODS` only, and starts from the KD terms the main evidence (``main_results``) chose on
    validation for each cell; a cell without a choice there is chosen here by the same grid and rule.

    Args:
        output: ``results_fast.json`` to read (if present) and write.
        work: folder of the fast arm's checkpoints (not the main run's: other networks).
        main_results: the main evidence's ``results.json`` (its ``selection`` is reused).
        overrides: extra bundle overrides for every run.
        datasets: the datasets this process runs.
    """

    methods = FAST_METHODS
    overlays = (FAST_OVERLAY,)
    tag = {"student": "fast"}

    def __init__(self, output: Path, work: Path, main_results: Path, overrides: dict[str, Any] | None = None,
                 datasets: list[str] | None = None) -> None:
        super().__init__(output, work, overrides, datasets)
        self.results["protocol"] = protocol_text(__doc__)
        self.results["overrides"] = self.overrides
        main = json.loads(main_results.read_text()).get("selection", {}) if main_results.is_file() else {}
        for cell, entry in main.items():
            if cell.split("/")[0] in self.datasets and "chosen" in entry:
                self.results["selection"].setdefault(cell, {**entry, "source": f"{main_results.name} (main evidence)"})


# --------------------------------------------------------------------------- report


def _mean_std(values: list[float], digits: int = 3) -> str:
    return mean_std(values, digits, single="note", empty="–")


def _gain(values: list[float]) -> str:
    return signed_mean_std(values)


def _ci(values: list[float]) -> str:
    """95% t-interval of paired gains (the same as ``monai-kd results weckd``, ``SPECS["weckd"]``)."""
    return ci(t_interval(values))


def _runs(runs: list[dict], **match: Any) -> list[dict]:
    return [r for r in runs if all(r[k] == v for k, v in match.items())]


def verdicts(runs: list[dict], dataset: str, fraction: float) -> list[tuple[str, list[float], list[float]]]:
    """For each baseline: paired (by seed) gains of the chain's last link in test accuracy and in test AUC."""
    last = {r["seed"]: r for r in _runs(runs, dataset=dataset, fraction=fraction, method="chain", link=CHAIN_LENGTH)}
    out = []
    for method in METHODS[1:]:
        base = {r["seed"]: r for r in _runs(runs, dataset=dataset, fraction=fraction, method=method)}
        seeds = sorted(set(last) & set(base))
        if seeds:
            out.append((method, [last[s]["accuracy"] - base[s]["accuracy"] for s in seeds],
                        [last[s]["auc"] - base[s]["auc"] for s in seeds]))
    return out


def verdict(acc: list[float], auc: list[float]) -> str:
    """``chain wins`` when both mean gains are positive and the chain is more accurate on most seeds (mirrored for
    ``chain loses``); anything else is ``mixed``. With 3 seeds this is a direction, not a significance test."""
    wins = sum(a > 0 for a in acc)
    if statistics.mean(acc) > 0 and statistics.mean(auc) > 0 and wins > len(acc) / 2:
        return "chain wins"
    if statistics.mean(acc) < 0 and statistics.mean(auc) < 0 and wins < len(acc) / 2:
        return "chain loses"
    return "mixed"


def markdown(results: dict) -> str:
    """Tables: last link vs the baselines, every link of the chain, paired gains and a plain verdict."""
    runs = results["runs"]
    lines: list[str] = []
    for dataset in [d for d in DATASETS if _runs(runs, dataset=d)]:
        lines += [f"### {dataset} (test split; mean ± std over seeds; links of {CHAIN_LENGTH} x the fraction, disjoint)", "",
                  "| per-link fraction | method | seeds | labelled items | test accuracy | test AUC | test NLL | val NLL |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        fractions = sorted({r["fraction"] for r in _runs(runs, dataset=dataset)})
        for f in fractions:
            for method in METHODS:
                rs = _runs(runs, dataset=dataset, fraction=f, method=method, link=CHAIN_LENGTH)
                if rs:
                    items = int(statistics.mean(r["train_items"] for r in rs))
                    lines.append(f"| {f:.0%} | {method}{' (link 3)' if method == 'chain' else ''} | {len(rs)} | {items} | "
                                 f"{_mean_std([r['accuracy'] for r in rs])} | {_mean_std([r['auc'] for r in rs])} | "
                                 f"{_mean_std([r['nll'] for r in rs])} | {_mean_std([r['val_nll'] for r in rs])} |")
        lines += ["", "Every link of the chain (test accuracy / AUC):", "",
                  "| per-link fraction | " + " | ".join(f"link {k}" for k in range(1, CHAIN_LENGTH + 1)) + " |",
                  "|---:|" + "---:|" * CHAIN_LENGTH]
        for f in fractions:
            cells = []
            for k in range(1, CHAIN_LENGTH + 1):
                rs = _runs(runs, dataset=dataset, fraction=f, method="chain", link=k)
                cells.append(f"{_mean_std([r['accuracy'] for r in rs])} / {_mean_std([r['auc'] for r in rs])}" if rs else "–")
            lines.append(f"| {f:.0%} | " + " | ".join(cells) + " |")
        lines += ["", "Paired gain of the chain's last link over each baseline (same seed, same partition):", "",
                  "| per-link fraction | baseline | accuracy gain | accuracy gain 95% CI | AUC gain | AUC gain 95% CI "
                  "| chain more accurate on | verdict |",
                  "|---:|---|---:|---:|---:|---:|---:|---|"]
        for f in fractions:
            for method, acc, auc in verdicts(runs, dataset, f):
                lines.append(f"| {f:.0%} | {method} | {_gain(acc)} | {_ci(acc)} | {_gain(auc)} | {_ci(auc)} | "
                             f"{sum(a > 0 for a in acc)}/{len(acc)}"
                             f" seeds | {verdict(acc, auc)} |")
        chosen = [f"{f:.0%}: tau {s['chosen']['temperature']:g}, w {s['chosen']['kd_weight']:g}"
                  for f in fractions if "chosen" in (s := results["selection"].get(f"{dataset}/{f:g}", {}))]
        lines += ["", f"KD terms chosen on seed 0 by validation NLL of link 3: {'; '.join(chosen)}.", ""]
    return "\n".join(lines)


def fast_markdown(results: dict, main: dict, bench: dict | None) -> str:
    """The fast arm beside the default student: test metrics and one-thread latency per fraction, then paired gains.

    Args:
        results: the fast arm's results (``results_fast.json``).
        main: the main evidence's results (``results.json``): the default student's rows of the same methods.
        bench: ``docs/bench_latency.json`` (or ``None``).
    """
    lines = busy_latency_note(bench, "python scripts/weckd_evidence.py --student fast --report-only")
    fast = results["runs"]
    for dataset in [d for d in DATASETS if _runs(fast, dataset=d)]:
        fractions = sorted({r["fraction"] for r in _runs(fast, dataset=dataset)})
        rows = []
        for f in fractions:
            for student, runs, model in (("fast", fast, "student_fast"), ("default", main.get("runs", []), "student")):
                for method in FAST_METHODS:
                    rs = _runs(runs, dataset=dataset, fraction=f, method=method, link=CHAIN_LENGTH)
                    if rs:
                        name = f"{method} (link 3)" if method == "chain" else method
                        rows.append(([f"{f:.0%}", name, student], rs, model))
        lines += [f"### {dataset}: fast student (`configs/student_fast.json`) beside the default student (test split; "
                  "mean ± std over seeds)", "",
                  *accuracy_latency_table(["per-link fraction", "method", "student"], rows, bench, "weckd"), ""]
        for f in fractions:
            for method, acc, auc in verdicts(fast, dataset, f):
                lines.append(f"- {f:.0%}, fast student: chain (link 3) minus {method}: accuracy {_gain(acc)}"
                             f"{ci_note(t_interval(acc))}, AUC {_gain(auc)}{ci_note(t_interval(auc))} (chain more "
                             f"accurate on {sum(a > 0 for a in acc)}/{len(acc)} seeds): {verdict(acc, auc)}")
            last = {r["seed"]: r for r in _runs(fast, dataset=dataset, fraction=f, method="chain", link=CHAIN_LENGTH)}
            base = {r["seed"]: r for r in _runs(main.get("runs", []), dataset=dataset, fraction=f, method="chain",
                                                link=CHAIN_LENGTH)}
            if seeds := sorted(set(last) & set(base)):
                auc = [last[s]["auc"] - base[s]["auc"] for s in seeds]
                lines.append(f"- {f:.0%}: fast chain minus default chain (link 3, same seed and partition): AUC "
                             f"{_gain(auc)}{ci_note(t_interval(auc))}")
        chosen = [f"{f:.0%}: tau {s['chosen']['temperature']:g}, w {s['chosen']['kd_weight']:g} "
                  f"({s.get('source', 'this arm')})" for f in fractions if "chosen" in (s := results["selection"].get(f"{dataset}/{f:g}", {}))]
        lines += ["", f"KD terms: {'; '.join(chosen)}.", ""]
    if results.get("overrides"):
        lines += [f"**Not evidence**: runs with overrides {results['overrides']} (a pipeline check).", ""]
    return "\n".join(lines) if fast else "No fast-student records yet (the run is resumable)."


def plot(results: dict, path: Path) -> None:
    """Test accuracy and AUC per link, one line per fraction (mean ± std over seeds), baselines as markers at link 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    datasets = [d for d in DATASETS if _runs(runs, dataset=d)]
    if not datasets:
        return
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.6 * len(datasets)), squeeze=False)
    markers = {"single_backbone_same_data": "v", "one_step_kd": "s", "single_backbone_union": "*"}
    for row, dataset in zip(axes, datasets):
        fractions = sorted({r["fraction"] for r in _runs(runs, dataset=dataset)})
        for ax, metric in zip(row, ("accuracy", "auc")):
            for c, f in enumerate(fractions):
                color = f"C{c}"
                xs, ms, sds = [], [], []
                for k in range(1, CHAIN_LENGTH + 1):
                    vals = [r[metric] for r in _runs(runs, dataset=dataset, fraction=f, method="chain", link=k)]
                    if vals:
                        xs.append(k)
                        ms.append(statistics.mean(vals))
                        sds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
                ax.errorbar(xs, ms, yerr=sds, color=color, marker="o", capsize=3, label=f"chain, {f:.0%} per link")
                for j, method in enumerate(METHODS[1:]):
                    vals = [r[metric] for r in _runs(runs, dataset=dataset, fraction=f, method=method)]
                    if vals:
                        ax.errorbar(CHAIN_LENGTH + 0.12 * (j + 1), statistics.mean(vals),
                                    yerr=statistics.stdev(vals) if len(vals) > 1 else 0.0, color=color,
                                    marker=markers[method], linestyle="none", capsize=2,
                                    label=method if c == 0 else None, markerfacecolor="none")
            ax.set_xticks(range(1, CHAIN_LENGTH + 1))
            ax.set_xlabel("link")
            ax.set_ylabel(f"test {metric}")
            ax.set_title(dataset)
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = evidence_parser(__doc__, quick="smoke test: one epoch, a few steps (not evidence)",
                             report_only="only re-render the tables and the plot")
    parser.add_argument("--student", choices=["default", "fast"], default="default",
                        help="fast: the fast-student arm (configs/student_fast.json; FastEvidence) into "
                             "results_fast.json and the README's fast section")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=sorted(DATASETS))
    parser.add_argument("--fractions", nargs="+", type=float, default=FRACTIONS)
    parser.add_argument("--run-seeds", nargs="+", type=int, default=None,
                        help="train only these of --seeds in this process (e.g. one process per core; the KD grid"
                             " of seed 0 must be chosen first, by a process that runs seed 0)")
    parser.add_argument("--work", type=Path, default=None,
                        help="checkpoints (default scripts/_work/weckd[_fast][_quick])")
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default docs/results.json, or docs/results_fast.json with --student fast)")
    parser.add_argument("--main-results", type=Path, default=BUNDLE / "docs" / "results.json",
                        help="--student fast: the main evidence (KD terms reused, default-student rows shown)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="README with the markers (default the bundle's; with --quick a copy in the work folder)")
    parser.add_argument("--plot", type=Path, default=None, help="chain plot (default beside the README)")
    parser.add_argument("--bench", type=Path, default=REPO / "docs" / "bench_latency.json",
                        help="--student fast: latency benchmark (scripts/bench_latency.py)")
    args = parser.parse_args(argv)
    if not args.quick and not args.report_only:
        check_seeds(parser, args.seeds, "use at least 3 seeds: single-seed accuracy at these label counts swings by "
                                        "several points")
    if 0 not in args.seeds:
        parser.error("seed 0 must be among --seeds: the KD grid runs on it")
    run_seeds = sorted(args.run_seeds if args.run_seeds is not None else args.seeds)
    if not set(run_seeds) <= set(args.seeds):
        parser.error(f"--run-seeds {run_seeds} must be a subset of --seeds {args.seeds}")
    setup_logging()
    quick = {"max_epochs": 1, "min_iterations": 2} if args.quick else {}
    fast = args.student == "fast"
    work = args.work or REPO / "scripts" / "_work" / f"weckd{'_fast' * fast}{'_quick' * args.quick}"
    docs = work if args.quick else BUNDLE / "docs"  # a smoke test never writes into the bundle by default
    output = args.output or docs / ("results_fast.json" if fast else "results.json")
    readme = args.readme or docs / "README.md"
    if not readme.is_file():
        readme.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLE / "docs" / "README.md", readme)
    chain_plot = args.plot or readme.parent / "chain.png"
    if fast:
        evidence = FastEvidence(output, work, args.main_results, quick, args.datasets)

        def render() -> str:
            return render_fast_section(readme, fast_markdown, evidence.results, args.main_results, args.bench)
    else:
        evidence = Evidence(output, work, quick, args.datasets)

        def render() -> str:
            text = markdown(evidence.results)
            write_section(readme, text)
            plot(evidence.results, chain_plot)
            return text
    if not args.report_only:
        for dataset in args.datasets:
            for fraction in args.fractions:
                evidence.run_cell(dataset, fraction, run_seeds)
                render()
    print(render())


if __name__ == "__main__":
    main()
