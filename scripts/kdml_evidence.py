"""Evidence for the KD + mutual learning bundles: the 12 regime x variant runs of Niyaz et al. on real data.

For every task (``classification``: ``bundles/kdml_cls`` on PneumoniaMNIST; ``segmentation``: ``bundles/kdml_seg``
on BraTS FLAIR 2D slices) and every seed, the script trains through the bundle's own ``train.json`` and evaluates
through its ``evaluate.json`` (exactly what users run):

- ``teacher``: the offline teacher (``run_teacher``); it is the frozen teacher of the ``kd_off`` runs and the
  reference teacher for the fidelity/CKA of runs that have no teacher of their own (``ml``, ``student_alone``);
- ``student_alone``: the two students trained together with their task loss only (``regime=ml`` with both
  mutual-learning weights 0), i.e. two independent students and their ensemble;
- the 12 runs ``regime`` in (``ml``, ``kd_on``, ``kd_off``, ``kd_ml``) x ``variant`` in (``V1``, ``V2``, ``V3``)
  (``run_students``). All runs of a seed start from the same student weights and see the same batches.

Rules fixed before looking at any test number:
- every network is the SWA average of the last half of its epochs (no checkpoint picking);
- temperature 2 and unit weights for the task, KD and ML prediction terms (the paper's values: "temperature ... 2",
  CE + KL + MSE); the only searched hyper-parameters are the two feature-MSE weights, whose scale depends on the
  tapped layers. On the first seed, ``kd_feature_weight`` is chosen from ``FEATURE_GRID`` on ``kd_off`` V2 (the
  run whose only distillation terms are teacher -> student features) and ``ml_feature_weight`` on ``ml`` V2 (only
  student <-> student features), by the *validation* score of the two students: lowest mean validation NLL of
  S1 and S2 for classification (validation AUC saturates near 0.99 on PneumoniaMNIST), highest mean validation
  Dice of S1 and S2 for segmentation. V3 never takes part in the choice, and the chosen pair is used for every
  regime, variant and seed;
- test metrics are computed once per trained model and never feed back into any choice.

Every record of ``runs`` has exactly ``task``, ``regime`` (``kd_off``, ``kd_on``, ``ml``, ``kd_ml``, ``teacher``,
``student_alone``), ``variant`` (``V1``, ``V2``, ``V3``; ``null`` for the two baselines, which have no sharing
variant), ``seed`` and ``metrics`` = ``{"s1", "s2", "ensemble"}``, each with ``accuracy`` and ``auc``
(classification) or ``dice`` and ``iou`` (segmentation) on the test split, and ``fidelity`` (top-1 agreement with
the teacher, or Dice between the student's and the teacher's masks averaged over slices). For the ``teacher``
baseline the three entries are the teacher itself (fidelity 1). The teacher of the fidelity is the run's own
teacher (the frozen one for ``kd_off``, the co-trained one for ``kd_on``/``kd_ml``) and the seed's offline teacher
for ``ml`` and ``student_alone``. Accuracy/AUC: MONAI/ignite metrics of the bundle's ``evaluate.json``; Dice/IoU:
pooled over all test pixels (MONAI ``ConfusionMatrix`` "f1 score" / "threat score", foreground only).

Writes ``docs/results.json`` of each bundle (``runs``, plus ``protocol``, ``selection``, ``details`` with the
validation metrics, the teacher's metrics, CKA and timings of every run) and the Markdown tables between the
``<!-- results:begin -->``/``<!-- results:end -->`` markers of the bundle's ``docs/README.md``, with CKA heatmaps
(teacher layers vs student layers, mean over seeds) saved next to it when each PNG is under ``MAX_PNG_BYTES``.
Resumable: a run already recorded in ``results.json`` is skipped, and a trained checkpoint is evaluated rather than
retrained; results are written after every run, so the script can be stopped and restarted at any time.

``--student fast`` (classification only, :class:`FastEvidence`) is the fast-student arm: the same protocol with
``configs/student_fast.json`` layered over ``train.json`` and ``evaluate.json`` of the student runs (both students
become ``monai_kd.networks.FastStudent``), ``student_alone``, ``kd_off`` V1 and ``kd_ml`` V3 only, with the feature
weights the main evidence chose (its ``selection``; without one it refuses), and the main run's offline teachers.
Records, the main ones' fields plus ``student: "fast"``, go to ``docs/results_fast.json``; the table between the
``<!-- fast:begin -->``/``<!-- fast:end -->`` markers of the README puts each model beside its one-thread latency
from ``docs/bench_latency.json`` (entry ``kdml_cls``), with the teacher's and default students' rows of
``results.json``.

``--quick`` checks the whole pipeline in minutes (one seed, one short epoch per stage, a two-value grid) and
writes into ``--work`` only (``results_<task>.json``, ``README_<task>.md``), never into the bundles.

Paired gains carry their 95% confidence interval: the Student-t interval over seeds of the per-seed differences
(``monai_kd.evidence``; ``monai-kd results BUNDLE`` prints the same intervals).

Example::

    python scripts/kdml_evidence.py --tasks classification segmentation --seeds 0 1 2   # many hours, resumable
    # or one process per CPU core, sharing the runs and results.json (each run is claimed by one process):
    python scripts/kdml_evidence.py --tasks classification & python scripts/kdml_evidence.py --tasks classification
    python scripts/kdml_evidence.py --quick                                             # minutes
    python scripts/kdml_evidence.py --dry-run                                           # list what is left to run
    python scripts/kdml_evidence.py --report-only                                       # re-render from results.json
    python scripts/kdml_evidence.py --student fast --seeds 0 1 2 --teacher-work scripts/_work/kdml  # fast arm
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_kd.evidence import (MARKER, SPECS, RecordStore, check_seeds, ci, ci_note, evidence_parser, mean_std,
                               paired_difference, protocol_text, run_bundle, run_stage, setup_logging, share_runs,
                               signed_mean_std)
from monai_kd.evidence.evaluate import evaluate_bundle
from monai_kd.metrics import save_cka_heatmap
from monai_kd.reporting import (accuracy_latency_table, busy_latency_note, changes_table, markers, render_fast_section,
                                write_section)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REGIMES = ("ml", "kd_on", "kd_off", "kd_ml")  # the row order of the paper's tables
VARIANTS = ("V1", "V2", "V3")
REGIME_NAMES = {"ml": "ML", "kd_on": "KD (on)", "kd_off": "KD (off)", "kd_ml": "KD + ML"}
FEATURE_GRID = (0.1, 1.0, 10.0)
QUICK_GRID = (0.1, 1.0)
MAX_PNG_BYTES = 80_000
VAL_CKA = {"cka_teacher_layers": "$[@teacher_feature_layer]", "cka_student_layers": "$[@student_feature_layer]"}
MARK_BEGIN, MARK_END = markers()
#: runs whose CKA heatmaps are drawn: the conventional V1 KD (off) and ML, and the proposed V3 KD + ML
HEATMAP_RUNS = (("kd_off", "V1"), ("ml", "V1"), ("kd_ml", "V3"))
TEACHER_STAGE = "run_teacher"  # never under an overlay: the offline teacher is the main protocol's
#: the fast-student arm (``--student fast``): its overlay and its runs (the students alone, conventional KD and the
#: paper's method; ``kd_off`` V1 costs about 0.6 of a ``kd_ml`` V3 run: no teacher training)
FAST_OVERLAY = "student_fast.json"
FAST_RUNS = (("student_alone", None), ("kd_off", "V1"), ("kd_ml", "V3"))
FAST_NAMES = {"student_alone": "students alone", **REGIME_NAMES}

TASKS: dict[str, dict[str, Any]] = {
    "classification": {
        "bundle": REPO / "bundles" / "kdml_cls",
        "dataset_dir": DATA / "pneumoniamnist",
        "metrics": ("accuracy", "auc"),
        "selection": ("nll", min),
        "quick": {"teacher_epochs": 1, "max_epochs": 1, "teacher_stage#trainer#epoch_length": 4,
                  "train#trainer#epoch_length": 4},
    },
    "segmentation": {
        "bundle": REPO / "bundles" / "kdml_seg",
        "dataset_dir": DATA / "brats2015-sample",
        "metrics": ("dice", "iou"),
        "selection": ("dice", max),
        "quick": {"teacher_epochs": 1, "max_epochs": 1, "val_interval": 1, "teacher_stage#trainer#epoch_length": 2,
                  "train#trainer#epoch_length": 2},
    },
}

logger = logging.getLogger("kdml_evidence")
POLL_SECONDS = 30.0  # how often a process waiting for a run another process holds looks again


class BudgetExhausted(RuntimeError):
    """The ``--budget-hours`` of this session is used up; everything recorded so far is kept."""


class NoSelection(RuntimeError):
    """The fast arm needs the feature weights the main evidence chose on validation, and there are none yet."""


# --------------------------------------------------------------------------- one run


def _configs(task: str, overlays: Sequence[str] = ()) -> tuple[str | list[str], list[str], str]:
    """``train.json``, ``[train.json, evaluate.json]`` and ``metadata.json`` of the task's bundle, each config list
    followed by ``overlays`` (file names in the bundle's ``configs``; training gets a list only when there are some)."""
    bundle = TASKS[task]["bundle"]
    train = str(bundle / "configs" / "train.json")
    extra = [str(bundle / "configs" / name) for name in overlays]
    return ([train, *extra] if extra else train, [train, str(bundle / "configs" / "evaluate.json"), *extra],
            str(bundle / "configs" / "metadata.json"))


def train_and_evaluate(
    task: str, stage: str, root: Path, seed: int, overrides: dict[str, Any], evaluate: bool = True,
    overlays: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one stage of the bundle (unless its checkpoint exists), then evaluate it on the val and test splits.

    Args:
        task: ``"classification"`` or ``"segmentation"``.
        stage: ``"run_teacher"`` or ``"run_students"``.
        root: the run's ``bundle_root`` (``models/`` and ``eval/`` are written there).
        seed: the bundle's ``seed``.
        overrides: other config overrides (regime, variant, weights, teacher checkpoint, epochs).
        evaluate: run ``evaluate.json`` on the val and test splits.
        overlays: config files of the bundle's ``configs`` layered over ``train.json`` and ``evaluate.json`` (e.g.
            ``student_fast.json``).

    Returns:
        ``{"train_seconds", "val", "test"}`` with the contents of ``eval/val_metrics.json`` / ``eval/metrics.json``
        (``val``/``test`` absent when ``evaluate`` is False).
    """
    train_cfg, eval_cfg, meta = _configs(task, overlays)
    common = {"meta_file": meta, "bundle_root": str(root), "dataset_dir": str(TASKS[task]["dataset_dir"]), "seed": seed,
              **overrides}
    common.pop("bundle_root")
    _adopt_evaluated_run(root, root / "models" / ("teacher.pt" if stage == "run_teacher" else "model_s2.pt"))
    # finished = run_stage's marker, not the checkpoint: CheckpointSaver's save_final also writes it on an exception
    trained = run_stage(root, functools.partial(run_bundle, stage, train_cfg, root, **common),
                        name=f"{task} {root.name} seed {seed}")
    out: dict[str, Any] = {"train_seconds": None if trained.seconds is None else round(trained.seconds, 1)}
    if evaluate:
        for split, name in (("val", "val_metrics.json"), ("test", "metrics.json")):
            # validation only feeds the selection: CKA of the shared feature layer alone (the full matrix is costly)
            cka = VAL_CKA if split == "val" else {}
            out[split] = evaluate_bundle(eval_cfg, root, name, eval_split=split, **common, **cka)
            out[f"{split}_cka"] = _cka_files(root / "eval" / ("fidelity_cka" if split == "test" else f"{split}_fidelity_cka"))
    return out


def _adopt_evaluated_run(root: Path, checkpoint: Path) -> None:
    """Mark as finished a run folder from before the done markers whose checkpoint was evaluated (the evaluation
    only ever ran after a completed training); any other folder without the marker is retrained from scratch."""
    if not (root / MARKER).is_file() and checkpoint.is_file() and (root / "eval" / "metrics.json").is_file():
        (root / MARKER).write_text(json.dumps({"seconds": None, "adopted": "evaluated before done markers"}))


def _cka_files(folder: Path) -> dict[str, Any]:
    """The CKA matrices written by ``FidelityCKAHandler`` (``<name>_fidelity_cka.json``), by student name."""
    found = {}
    for name in ("s1", "s2"):
        path = folder / f"{name}_fidelity_cka.json"
        if path.is_file():
            content = json.loads(path.read_text())
            found[name] = {k: content[k] for k in ("teacher_layers", "student_layers", "cka")}
    return found


def record(task: str, regime: str, variant: str | None, seed: int, test: dict[str, Any]) -> dict[str, Any]:
    """One ``runs`` entry: exactly ``task``, ``regime``, ``variant``, ``seed`` and ``metrics`` (s1, s2, ensemble)."""
    names = TASKS[task]["metrics"]
    members = ("teacher", "teacher", "teacher") if regime == "teacher" else ("s1", "s2", "ensemble")
    metrics = {}
    for key, member in zip(("s1", "s2", "ensemble"), members):
        entry = {m: float(test[member][m]) for m in names}
        entry["fidelity"] = 1.0 if regime == "teacher" else _maybe(test[member].get("fidelity"))
        metrics[key] = entry
    return {"task": task, "regime": regime, "variant": variant, "seed": seed, "metrics": metrics}


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------- the protocol


class Evidence:
    """The results file of one task, with resumable run bookkeeping.

    Args:
        task: ``"classification"`` or ``"segmentation"``.
        output: the ``results.json`` to read (if present) and write.
        work: folder for checkpoints and evaluation outputs of every run.
        quick: one short epoch per stage and a two-value grid.
        deadline: ``time.time()`` after which no new training starts (:class:`BudgetExhausted` is raised).
    """

    #: config files of the bundle's ``configs`` layered over every student run and its evaluation (never the teacher's)
    overlays: tuple[str, ...] = ()
    #: fields added to every record
    tag: dict[str, Any] = {}
    #: the ``(regime, variant)`` runs recorded per seed; ``None``: the whole protocol (teacher, students alone, the 12)
    runs: tuple[tuple[str, str | None], ...] | None = None

    def __init__(self, task: str, output: Path, work: Path, quick: bool = False, deadline: float | None = None) -> None:
        self.task = task
        self.deadline = deadline
        self.output = output
        self.work = work / task
        self.quick = quick
        self.store = RecordStore(output, _run_key, defaults={"protocol": protocol_text(__doc__), "selection": {},
                                                             "details": {}})
        self.results = self.store.results

    # bookkeeping ---------------------------------------------------------------
    def recorded(self, regime: str, variant: str | None, seed: int) -> bool:
        """Whether ``runs`` already holds this run."""
        return self.store.recorded({"regime": regime, "variant": variant, "seed": seed})

    def wanted(self, regime: str, variant: str | None) -> bool:
        """Whether this protocol records the run (see :attr:`runs`)."""
        return self.runs is None or (regime, variant) in self.runs

    def save(self) -> None:
        """Write ``results.json``, merging in what other processes recorded since (one process per seed may share it)."""
        self.store.save()

    def _check_budget(self, root: Path) -> None:
        if self.deadline is not None and time.time() > self.deadline and not (root / "models").is_dir():
            raise BudgetExhausted(f"time budget used up before {root}")

    def _overrides(self, **extra: Any) -> dict[str, Any]:
        return {**(TASKS[self.task]["quick"] if self.quick else {}), **extra}

    def teacher_ckpt(self, seed: int) -> Path:
        """The offline teacher of ``seed`` (shared by every run of that seed)."""
        return _teacher_ckpt(self.work, seed)

    def _teacher_jobs(self, seed: int) -> list[tuple[Path, Callable[[], Any]]]:
        """The ``(run folder, job)`` that trains (or reuses) the seed's offline teacher, for :meth:`_shared`."""
        return [(self.teacher_ckpt(seed).parents[1], lambda: self.teacher(seed))]

    # stages ----------------------------------------------------------------------
    def teacher(self, seed: int) -> None:
        """Train (or reuse) the seed's offline teacher and record its test metrics (if :attr:`runs` records it)."""
        root = self.teacher_ckpt(seed).parents[1]
        evaluate = self.wanted("teacher", None) and not self.recorded("teacher", None, seed)
        if not evaluate and (root / MARKER).is_file():
            return
        self._check_budget(root)
        out = train_and_evaluate(self.task, TEACHER_STAGE, root, seed,
                                 self._overrides(regime="kd_off", teacher_ckpt=str(self.teacher_ckpt(seed))), evaluate)
        if evaluate:
            self._store("teacher", None, seed, out, {})

    def students(self, regime: str, variant: str | None, seed: int, weights: dict[str, float], run_id: str,
                 record_as: tuple[str, str | None] | None = None) -> dict[str, Any]:
        """Train and evaluate one two-student run; record it under ``record_as`` (default ``(regime, variant)``)."""
        root = self.work / f"seed{seed}" / run_id
        self._check_budget(root)
        out = train_and_evaluate(self.task, "run_students", root, seed, self._overrides(
            regime=regime, variant=variant or "V1", teacher_ckpt=str(self.teacher_ckpt(seed)), **weights),
            overlays=self.overlays)
        if record_as is not None:
            self._store(*record_as, seed, out, weights)
        return out

    def _store(self, regime: str, variant: str | None, seed: int, out: dict[str, Any], weights: dict[str, float]) -> None:
        run = {**record(self.task, regime, variant, seed, out["test"]), **self.tag}
        self.results["runs"].append(run)
        key = f"{regime}_{variant}_seed{seed}" if variant else f"{regime}_seed{seed}"
        self.results["details"][key] = {
            "hyper_parameters": weights,
            "train_seconds": out["train_seconds"],
            "val": out["val"],
            "test": out["test"],
            "cka": out["test_cka"],
            "fidelity_teacher": _fidelity_teacher(regime),
        }
        self.save()  # may append other processes' records after this one
        logger.info("recorded %s", run)

    def _shared(self, jobs: list[tuple[Path, Callable[[], Any]]], wait: bool,
                until: Callable[[], bool] | None = None) -> dict[Path, Any]:
        """Run each ``(run folder, job)`` under the folder's claim, so that processes sharing the results file split
        the work (:func:`monai_kd.evidence.share_runs`, the records refreshed from disk before each job, which checks
        them itself).

        Args:
            jobs: ``(run folder, job)`` pairs.
            wait: wait for the jobs other processes hold (True: retried every ``POLL_SECONDS``, the job then finds
                the checkpoint and only evaluates) or leave them to them (False: that process records them).
            until: stop waiting as soon as this is true (checked after refreshing the records).

        Returns:
            what each job returned, by run folder.
        """
        return share_runs(jobs, wait, self.store.refresh, until, POLL_SECONDS)

    def _teacher_ready(self, seed: int) -> None:
        """Make sure the seed's offline teacher is trained (by this process, or by waiting for the one training it)."""
        self._shared(self._teacher_jobs(seed), wait=True)

    def select(self, seed: int) -> dict[str, float]:
        """Choose ``kd_feature_weight`` and ``ml_feature_weight`` on validation (see the module docstring).

        Every process that needs the choice takes part: it trains the grid runs nobody holds and waits for the rest.
        """
        self.store.refresh()
        if "chosen" in self.results["selection"]:
            return self.results["selection"]["chosen"]
        self._teacher_ready(seed)  # the kd_off grid distils from it
        metric, best = TASKS[self.task]["selection"]
        grid = QUICK_GRID if self.quick else FEATURE_GRID
        selection: dict[str, Any] = {
            "rule": f"{best.__name__} mean validation {metric} of S1 and S2, seed {seed}; kd_feature_weight on kd_off V2, "
                    "ml_feature_weight on ml V2; temperature 2 and unit task/KD/ML prediction weights fixed",
            "grid": [],
        }
        runs = [(regime, key, w) for regime, key in (("kd_off", "kd_feature_weight"), ("ml", "ml_feature_weight"))
                for w in grid]
        jobs = {run: (self.work / f"seed{seed}" / f"grid_{run[0]}_V2_{run[1]}{run[2]:g}",
                      functools.partial(self.students, run[0], "V2", seed, {run[1]: run[2]},
                                        f"grid_{run[0]}_V2_{run[1]}{run[2]:g}")) for run in runs}
        outs = self._shared(list(jobs.values()), wait=True, until=lambda: "chosen" in self.results["selection"])
        if "chosen" in self.results["selection"]:  # another process finished the grid first
            return self.results["selection"]["chosen"]
        chosen: dict[str, float] = {}
        for regime, key in (("kd_off", "kd_feature_weight"), ("ml", "ml_feature_weight")):
            scores = {}
            for run in [r for r in runs if r[0] == regime]:
                out = outs[jobs[run][0]]
                scores[run[2]] = statistics.mean(float(out["val"][s][metric]) for s in ("s1", "s2"))
                selection["grid"].append({"regime": regime, "variant": "V2", key: run[2], f"val_{metric}": scores[run[2]]})
            chosen[key] = best(scores, key=scores.get)
        selection["chosen"] = chosen
        self.results["selection"] = selection
        self.save()
        return chosen

    def baselines(self, seed: int) -> None:
        """The seed's offline teacher and its two students alone (they need no grid); runs another process holds are
        left to it."""
        def alone() -> None:
            if not self.recorded("student_alone", None, seed):
                self.students("ml", "V1", seed, {"ml_weight": 0.0, "ml_feature_weight": 0.0}, "student_alone",
                              record_as=("student_alone", None))

        alone_job = [(self.work / f"seed{seed}" / "student_alone", alone)] if self.wanted("student_alone", None) else []
        self._shared([*self._teacher_jobs(seed), *alone_job], wait=False)

    def combinations(self, seed: int, first_seed: int) -> None:
        """The 12 regime x variant runs of one seed, with the feature weights chosen on ``first_seed``'s grid."""
        chosen = self.select(first_seed)
        self._teacher_ready(seed)
        jobs = []
        for regime in REGIMES:
            for variant in [v for v in VARIANTS if self.wanted(regime, v)]:
                key = "kd_feature_weight" if regime == "kd_off" else "ml_feature_weight"
                grid_id = f"grid_{regime}_V2_{key}{chosen[key]:g}"
                # the chosen grid run of the first seed *is* this run: reuse its checkpoints
                same = variant == "V2" and regime in ("kd_off", "ml") and (self.work / f"seed{seed}" / grid_id).is_dir()
                run_id = grid_id if same else f"{regime}_{variant}"

                def job(regime: str = regime, variant: str = variant, run_id: str = run_id) -> None:
                    if not self.recorded(regime, variant, seed):
                        self.students(regime, variant, seed, dict(chosen), run_id, record_as=(regime, variant))

                jobs.append((self.work / f"seed{seed}" / run_id, job))
        self._shared(jobs, wait=False)

    def _selection_todo(self, seed: int) -> list[str]:
        """What :meth:`plan` lists for the feature weights: the grid on ``seed`` unless they are chosen."""
        if "chosen" in self.results["selection"]:
            return []
        return [f"grid: {2 * len(QUICK_GRID if self.quick else FEATURE_GRID)} runs on seed {seed}"]

    def run_seed(self, seed: int, first_seed: int) -> None:
        """Every run of one seed: teacher, students alone, (the grid,) the 12 combinations."""
        self.baselines(seed)
        self.combinations(seed, first_seed)

    def plan(self, seeds: Sequence[int]) -> list[str]:
        """The runs not recorded yet, for ``--dry-run``."""
        todo = [f"seed {s}: {r}" for s in seeds for r in ("teacher", "student_alone")
                if self.wanted(r, None) and not self.recorded(r, None, s)]
        todo += self._selection_todo(seeds[0])
        todo += [f"seed {s}: {r} {v}" for s in seeds for r in REGIMES for v in VARIANTS
                 if self.wanted(r, v) and not self.recorded(r, v, s)]
        return todo


class FastEvidence(Evidence):
    """The fast-student arm (``--student fast``, classification only): :class:`Evidence` with
    ``configs/student_fast.json`` layered over ``train.json`` and ``evaluate.json`` of every student run, so both
    students are the 13k-parameter ``monai_kd.networks.FastStudent`` (what a user runs with that overlay); only
    ``student_alone``, ``kd_off`` V1 and ``kd_ml`` V3, with the ``kd_feature_weight`` / ``ml_feature_weight`` the main
    evidence chose on validation (its ``selection``: nothing is chosen here, and without a choice the arm refuses to
    run). The offline teacher is never overlaid: the main run's (same configs and seed) when its run folder under
    ``teacher_work`` finished (``done.json``), else trained here through the same stage. Records carry
    ``student: "fast"``.

    Args:
        task: ``"classification"``.
        output: ``results_fast.json`` to read (if present) and write.
        work: folder of the fast arm's run folders (students; a teacher only when the main run has none finished).
        main_results: the main evidence's ``results.json`` (its ``selection`` is reused).
        teacher_work: the main evidence's work folder (``--work`` of the main run), whose finished teachers are reused.
        quick: one short epoch per stage (a pipeline check, marked "not evidence" in the table).
        deadline: ``time.time()`` after which no new training starts.
    """

    overlays = (FAST_OVERLAY,)
    tag = {"student": "fast"}
    runs = FAST_RUNS

    def __init__(self, task: str, output: Path, work: Path, main_results: Path, teacher_work: Path,
                 quick: bool = False, deadline: float | None = None) -> None:
        if task != "classification":
            raise ValueError(f"the fast-student arm runs the classification task only, not {task}")
        super().__init__(task, output, work, quick, deadline)
        self.teacher_work = teacher_work / task
        self.results["protocol"] = protocol_text(__doc__) + "\n\n" + protocol_text(FastEvidence.__doc__, "Args:")
        if quick:
            self.results["overrides"] = TASKS[task]["quick"]
        main = json.loads(main_results.read_text()).get("selection", {}) if main_results.is_file() else {}
        if "chosen" not in self.results["selection"] and "chosen" in main:
            self.results["selection"] = {**main, "source": f"{main_results.name} (main evidence)"}

    def teacher_ckpt(self, seed: int) -> Path:
        """This arm's teacher if it finished here, else the main run's if that finished, else this arm's (to train)."""
        own, main = _teacher_ckpt(self.work, seed), _teacher_ckpt(self.teacher_work, seed)
        if not (own.parents[1] / MARKER).is_file() and (main.parents[1] / MARKER).is_file():
            return main
        return own

    def _teacher_jobs(self, seed: int) -> list[tuple[Path, Callable[[], Any]]]:
        """None when the main run's teacher is reused (its folder is only read, never claimed), else this arm's."""
        if self.teacher_ckpt(seed) != _teacher_ckpt(self.work, seed):
            logger.info("seed %d: reusing the main run's teacher %s", seed, self.teacher_ckpt(seed))
            return []
        return super()._teacher_jobs(seed)

    def _selection_todo(self, seed: int) -> list[str]:
        return [] if "chosen" in self.results["selection"] else [
            "no feature weights chosen by the main evidence yet: --student fast refuses to run"]

    def select(self, seed: int) -> dict[str, float]:
        """The main evidence's feature weights (never a grid here).

        Raises:
            NoSelection: the main evidence has not chosen them yet.
        """
        self.store.refresh()
        if "chosen" not in self.results["selection"]:
            raise NoSelection(
                f"{self.output.name}: no feature weights chosen on validation yet; the fast arm reuses the main "
                "evidence's choice and never runs the grid itself: run the main evidence (python "
                "scripts/kdml_evidence.py --tasks classification --seeds 0 1 2) until its results.json holds "
                "selection.chosen, then run --student fast again")
        return self.results["selection"]["chosen"]


def _teacher_ckpt(work: Path, seed: int) -> Path:
    """The offline teacher of ``seed`` in the task folder ``work`` of an evidence run."""
    return work / f"seed{seed}" / "teacher" / "models" / "teacher.pt"


def _run_key(record: dict) -> tuple:
    return record["regime"], record["variant"], record["seed"]


def _fidelity_teacher(regime: str) -> str:
    if regime in ("kd_on", "kd_ml"):
        return "the run's co-trained (online) teacher"
    if regime == "teacher":
        return "itself"
    return "the seed's offline teacher" + ("" if regime == "kd_off" else " (the run has no teacher)")


# --------------------------------------------------------------------------- reporting


def _mean_std(values: Sequence[float | None], scale: float = 1.0) -> str:
    # one seed: say so rather than print "± 0"
    return mean_std(values, digits=2 if scale != 1.0 else 3, scale=scale, single="note", empty="-")


def _runs(results: dict, regime: str, variant: str | None) -> list[dict]:
    return sorted((r for r in results["runs"] if r["regime"] == regime and r["variant"] == variant), key=lambda r: r["seed"])


def paper_table(results: dict, metric: str, scale: float = 1.0) -> list[str]:
    """Rows = regimes, column groups = V1/V2/V3 with S1, S2 and the ensemble: mean ± std over seeds (Table 3/4 style)."""
    lines = ["| technique | " + " | ".join(f"{v} S1 | {v} S2 | {v} ensemble" for v in VARIANTS) + " |",
             "|---|" + "---:|" * 9]
    for regime in REGIMES:
        cells = []
        for variant in VARIANTS:
            rs = _runs(results, regime, variant)
            cells += [_mean_std([r["metrics"][k][metric] for r in rs], scale) for k in ("s1", "s2", "ensemble")]
        lines.append(f"| {REGIME_NAMES[regime]} | " + " | ".join(cells) + " |")
    return lines


def paired_gain(results: dict, metric: str, a: tuple[str, str], b: tuple[str, str], member: str = "ensemble") -> tuple[list[float], int]:
    """Per-seed differences ``a - b`` of ``metric`` of ``member`` (seeds present in both), and how many are > 0."""
    diff = _paired(results, metric, a, b, member)
    return list(diff.differences), diff.wins


def _paired(results: dict, metric: str, a: tuple[str, str], b: tuple[str, str], member: str = "ensemble"):
    """:func:`monai_kd.evidence.paired_difference` of ``member``'s ``metric`` between runs ``a`` and ``b``."""
    ra = {r["seed"]: r["metrics"][member][metric] for r in _runs(results, *a)}
    rb = {r["seed"]: r["metrics"][member][metric] for r in _runs(results, *b)}
    return paired_difference(ra, rb)


def mean_cka(results: dict, regime: str, variant: str, student: str) -> tuple[np.ndarray, list[str], list[str]] | None:
    """CKA matrix (teacher layers x student layers) of ``student`` averaged over the recorded seeds."""
    mats, layers = [], None
    for key, detail in results["details"].items():
        if key.startswith(f"{regime}_{variant}_seed") and student in detail.get("cka", {}):
            entry = detail["cka"][student]
            mats.append(np.array([[np.nan if v is None else v for v in row] for row in entry["cka"]], dtype=float))
            layers = (entry["teacher_layers"], entry["student_layers"])
    if not mats or layers is None:
        return None
    with warnings.catch_warnings():  # a cell that is NaN in every seed (constant layer) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.stack(mats), axis=0)
    return mean, layers[0], layers[1]


def markdown(task: str, results: dict, figures: Path, link_prefix: str = "", before: list[dict] | None = None) -> str:
    """The README section: paper-style tables, baselines, the headline comparison, fidelity, CKA, the selection and,
    given the records of an earlier run (``before``), how the ensembles' means moved."""
    names = TASKS[task]["metrics"]
    primary, secondary = names
    pct = 100.0  # the paper reports percentages
    seeds = sorted({r["seed"] for r in results["runs"]})
    lines = [f"Test split, mean ± std over {len(seeds)} seed(s) {seeds}; values in %. S1/S2: the two students, ensemble: "
             + ("per-class maximum probability." if task == "classification" else "union of the two masks."), ""]
    for metric in names:
        lines += [f"**{metric}** (Table {'3' if task == 'classification' else '4'} of the paper, our data)", ""]
        lines += paper_table(results, metric, pct) + [""]
    lines += ["**Baselines**", "", f"| model | {primary} | {secondary} | fidelity |", "|---|---:|---:|---:|"]
    for regime, member, label in (("teacher", "s1", "teacher"), ("student_alone", "s1", "student alone (S1)"),
                                  ("student_alone", "s2", "student alone (S2)"),
                                  ("student_alone", "ensemble", "two students alone, ensemble")):
        rs = _runs(results, regime, None)
        lines.append(f"| {label} | {_mean_std([r['metrics'][member][primary] for r in rs], pct)} | "
                     f"{_mean_std([r['metrics'][member][secondary] for r in rs], pct)} | "
                     f"{_mean_std([r['metrics'][member]['fidelity'] for r in rs], pct)} |")
    lines += ["", f"**Does V3 KD + ML beat the V1 baselines?** Paired by seed, {primary} of the ensemble and of each student "
              "(percentage points; the paper reports about +2 for the ensemble accuracy):", "",
              "| V3 KD + ML minus | ensemble | ensemble 95% CI | S1 | S2 | seeds where V3 KD + ML is better (ensemble) |",
              "|---|---:|---:|---:|---:|---:|"]
    for other in (("kd_off", "V1"), ("kd_on", "V1"), ("ml", "V1"), ("kd_ml", "V1")):
        cells = []
        for member in ("ensemble", "s1", "s2"):
            gains, _ = paired_gain(results, primary, ("kd_ml", "V3"), other, member)
            cells.append(_mean_std(gains, pct))
            if member == "ensemble":  # the same interval as `monai-kd results` (SPECS["kdml"]: ensemble, in %)
                cells.append(ci(_paired(results, primary, ("kd_ml", "V3"), other), SPECS["kdml"].digits, pct))
        gains, wins = paired_gain(results, primary, ("kd_ml", "V3"), other)
        lines.append(f"| {REGIME_NAMES[other[0]]} V1 | " + " | ".join(cells) + f" | {wins}/{len(gains)} |")
    agreement = "top-1 agreement" if task == "classification" else "Dice of the argmax masks, mean over slices"
    lines += ["", f"**Fidelity** ({agreement} with the run's teacher; the seed's offline teacher for ML), %:"]
    lines += [""] + paper_table(results, "fidelity", pct) + [""]
    heatmaps = []
    for regime, variant in HEATMAP_RUNS:
        for student in ("s1", "s2"):
            found = mean_cka(results, regime, variant, student)
            if found is None:
                continue
            matrix, rows, cols = found
            png = figures / f"cka_{regime}_{variant}_{student}.png"
            save_cka_heatmap(matrix, _short(rows), _short(cols), png,
                             title=f"{REGIME_NAMES[regime]} {variant}, {student.upper()} (mean of {len(seeds)} seed(s))")
            if png.stat().st_size <= MAX_PNG_BYTES:
                heatmaps.append(f"![CKA {regime} {variant} {student}]({link_prefix}{png.name})")
            else:
                png.unlink()
                heatmaps.append(f"(heatmap {png.name} is over {MAX_PNG_BYTES} bytes and was not kept)")
    if heatmaps:
        lines += ["**Linear CKA, teacher layers (rows) vs student layers (columns)**, test split, mean over seeds "
                  "(ML: against the seed's offline teacher):", "", " ".join(heatmaps), ""]
    sel = results.get("selection", {})
    if "chosen" in sel:
        grid = "; ".join(f"{g['regime']} V2 " + ", ".join(f"{k} {v:.4f}" if k.startswith("val_") else f"{k} {v:g}"
                                                        for k, v in g.items() if k not in ("regime", "variant"))
                         for g in sel["grid"])
        lines += [f"Hyper-parameters chosen on validation ({sel['rule']}): {grid}. Chosen: "
                  + ", ".join(f"{k} = {v:g}" for k, v in sel["chosen"].items()) + "."]
    n_grid = len(sel.get("grid", []))
    lines += ["", f"Records: {len(results['runs'])} runs in `results.json` (teacher, students alone and the regime x "
              f"variant runs, per seed), plus {n_grid} validation-grid runs of seed {seeds[0] if seeds else '-'}."]
    changed = changes_table(
        before or [], results["runs"], lambda r: (r["regime"], r["variant"]),
        {f"ensemble {m}": (lambda r, m=m: pct * r["metrics"]["ensemble"][m]) for m in names},
        lambda g: f"{REGIME_NAMES.get(g[0], g[0])} {g[1] or ''}".strip())
    if changed:
        lines += ["", "**What the correctness fixes changed** (means over seeds before the fixes, BatchNorm statistics "
                  "of SWA models recomputed and area-averaged feature resizing among them, and after; %):", "", changed]
    return "\n".join(lines)


def _fast_run_name(regime: str, variant: str | None) -> str:
    return f"{FAST_NAMES[regime]} {variant or ''}".strip()


def _member(runs: list[dict], member: str) -> list[dict]:
    """The test metrics of one member (``s1``, ``s2``, ``ensemble``) of each record."""
    return [r["metrics"][member] for r in runs]


def fast_markdown(results: dict, main: dict, bench: dict | None) -> str:
    """The fast arm beside the teacher and the default students: test metrics and one-thread latency, paired gains.

    Args:
        results: the fast arm's results (``results_fast.json``).
        main: the main evidence's results (``results.json``): the teacher's and the default students' rows.
        bench: ``docs/bench_latency.json`` (or ``None``); entry ``kdml_cls``.
    """
    fast = results["runs"]
    if not fast:
        return "No fast-student records yet (the run is resumable)."
    lines = busy_latency_note(bench, "python scripts/kdml_evidence.py --student fast --report-only")
    main = {"runs": main.get("runs", [])}
    members = {"s1": "S1", "s2": "S2", "ensemble": "ensemble"}
    rows = [(["teacher (ResNet-18)", "-"], _member(_runs(main, "teacher", None), "s1"), "teacher")]
    for regime, variant in FAST_RUNS:
        for student, source, model in (("fast", results, "student_fast"), ("default", main, "student")):
            runs = _runs(source, regime, variant)
            for member, label in members.items():  # the ensemble runs both students: no single-model latency
                rows.append(([_fast_run_name(regime, variant), f"{student} {label}"], _member(runs, member),
                             None if member == "ensemble" else model))
    seeds = sorted({r["seed"] for r in fast})
    lines += [f"Fast students (`configs/student_fast.json`: both students `FastStudent`, 13,330 parameters) beside the "
              f"teacher and the default students (77,450 parameters) of `results.json`; test split, mean ± std over "
              f"seeds (fast arm: {len(seeds)} seed(s) {seeds}), fractions (not %). Latency: eager, one thread, one "
              "student (the ensemble runs both, about twice that; not measured).", "",
              *accuracy_latency_table(["run", "students"], [row for row in rows if row[1]], bench, "kdml_cls",
                                      {"test accuracy": "accuracy", "test AUC": "auc", "fidelity": "fidelity"}), "",
              "Paired by seed (fast arm unless said otherwise), ensemble:", ""]
    # one pool of records for the paired differences, the default students' regimes relabelled
    both = {"runs": fast + [{**r, "regime": f"default {r['regime']}"} for r in main["runs"]]}
    pairs = [(("kd_ml", "V3"), ("student_alone", None), "fast"), (("kd_ml", "V3"), ("kd_off", "V1"), "fast"),
             (("kd_off", "V1"), ("student_alone", None), "fast")]
    pairs += [((regime, variant), (f"default {regime}", variant), "default") for regime, variant in FAST_RUNS]
    for a, b, student in pairs:
        for metric in ("accuracy", "auc"):
            diff = _paired(both, metric, a, b)
            if diff.differences:
                name = "AUC" if metric == "auc" else metric
                lines.append(f"- test {name}: fast {_fast_run_name(*a)} minus {student} "
                             f"{_fast_run_name(b[0].removeprefix('default '), b[1])}: "
                             f"{signed_mean_std(list(diff.differences))}{ci_note(diff)} (higher on {diff.wins}/"
                             f"{len(diff.differences)} seeds)")
    sel = results.get("selection", {})
    lines += ["", "Feature weights: " + ", ".join(f"{k} = {v:g}" for k, v in sel.get("chosen", {}).items())
              + f" ({sel.get('source', 'none chosen')}; the V1 runs have no feature terms)."]
    if results.get("overrides"):
        lines += ["", f"**Not evidence**: runs with overrides {results['overrides']} (a pipeline check)."]
    return "\n".join(lines)


#: tick labels of the MONAI UNet blocks (strides 2, 2, 2) used by the segmentation bundle
UNET_BLOCKS = {"model.0": "enc1", "model.1.submodule.0": "enc2", "model.1.submodule.1.submodule.0": "enc3",
               "model.1.submodule.1.submodule.1.submodule": "bottom", "model.1.submodule.1.submodule.2": "dec1",
               "model.1.submodule.2": "dec2", "model.2": "out"}


def _short(layers: Sequence[str]) -> list[str]:
    """Readable tick labels: U-Net block names (``model.1.submodule.1.submodule.2`` -> ``dec1``), others as they are."""
    return [UNET_BLOCKS.get(layer, layer) for layer in layers]



# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> None:
    """Run (or continue) the evidence of the chosen tasks and render the tables.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = evidence_parser(__doc__, quick="one seed, one short epoch per stage; writes into --work only")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--work", type=Path, default=None, help="checkpoints and evaluation outputs of every run")
    parser.add_argument("--dry-run", action="store_true", help="list the runs not recorded yet and exit")
    parser.add_argument("--budget-hours", type=float, default=None,
                        help="start no new training after this many hours (results so far are kept and rendered)")
    parser.add_argument("--run-seeds", nargs="+", type=int, default=None,
                        help="train only these of --seeds in this process (default all); several processes (one per "
                             "CPU core) may run the same command: each run is claimed by one of them, and the others "
                             "skip it or, for the grid that every seed needs, wait for it")
    parser.add_argument("--student", choices=["default", "fast"], default="default",
                        help="fast: the fast-student arm (FastEvidence, classification only: configs/student_fast.json "
                             "over the student runs) into docs/results_fast.json and the README's fast section")
    parser.add_argument("--teacher-work", type=Path, default=None,
                        help="--student fast: the main evidence's --work, whose finished teachers are reused "
                             "(default scripts/_work/kdml[_quick])")
    parser.add_argument("--main-results", type=Path, default=None,
                        help="--student fast: the main evidence's results (feature weights reused, teacher and "
                             "default-student rows shown; default docs/results.json, with --quick the main quick "
                             "run's)")
    parser.add_argument("--output", type=Path, default=None,
                        help="--student fast: results file (default docs/results_fast.json; --quick: in --work)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="--student fast: README with the fast markers (default the bundle's; --quick: in --work)")
    parser.add_argument("--bench", type=Path, default=REPO / "docs" / "bench_latency.json",
                        help="--student fast: latency benchmark (scripts/bench_latency.py, entry kdml_cls)")
    args = parser.parse_args(argv)
    work = args.work or REPO / "scripts" / "_work" / ("kdml_quick" if args.quick else "kdml")
    seeds = args.seeds[:1] if args.quick else args.seeds
    if not args.quick and not args.report_only:
        check_seeds(parser, seeds, "use at least 3 seeds (or --quick): single runs of these small sets swing by several points")
    if args.run_seeds is not None and not set(args.run_seeds) <= set(seeds):
        parser.error(f"--run-seeds {args.run_seeds} must be a subset of --seeds {seeds}")
    setup_logging()
    deadline = None if args.budget_hours is None else time.time() + 3600 * args.budget_hours
    if args.student == "fast":
        fast_main(parser, args, seeds, deadline)
        return
    for task in args.tasks:
        docs = TASKS[task]["bundle"] / "docs"
        output = work / f"results_{task}.json" if args.quick else docs / "results.json"
        evidence = Evidence(task, output, work, quick=args.quick, deadline=deadline)
        if args.dry_run:
            todo = evidence.plan(seeds)
            print(f"{task}: {len(todo)} item(s) left\n  " + "\n  ".join(todo))
            continue
        start = time.perf_counter()
        stopped = False
        if args.report_only and not output.is_file():
            logger.info("%s: no records in %s, nothing to render", task, output)
            continue
        mine = [] if args.report_only else [s for s in seeds if args.run_seeds is None or s in args.run_seeds]
        try:
            for seed in mine:  # the runs that need no grid first, so a second process never idles waiting for it
                evidence.baselines(seed)
            for seed in mine:
                evidence.combinations(seed, first_seed=seeds[0])
        except BudgetExhausted as e:
            logger.info("%s: %s; rerun the same command to continue", task, e)
            stopped = True
        if not args.report_only:
            evidence.save()  # merge what processes sharing the file recorded meanwhile, so the tables show all of it
        readme = work / f"README_{task}.md" if args.quick else docs / "README.md"
        figures = work / f"figures_{task}" if args.quick else docs
        if args.quick:
            readme.write_text(f"# quick check of {task}\n\n{MARK_BEGIN}\n{MARK_END}\n")
        before_file = docs / "results_before_correctness.json"
        before = json.loads(before_file.read_text())["runs"] if before_file.is_file() and not args.quick else None
        table = markdown(task, evidence.results, figures, link_prefix=f"figures_{task}/" if args.quick else "",
                         before=before)
        write_section(readme, table)
        print(table)
        logger.info("%s: %s in %.0f s (this session)", task, "stopped" if stopped else "done", time.perf_counter() - start)
        if stopped:
            break


def fast_main(parser: Any, args: Any, seeds: list[int], deadline: float | None) -> None:
    """``--student fast``: :class:`FastEvidence` on the classification task, then the README's ``fast`` section.

    Args:
        parser: the command line's parser (for its errors).
        args: the parsed command line.
        seeds: the seeds of the run (one with ``--quick``).
        deadline: ``time.time()`` after which no new training starts.
    """
    task = "classification"
    if args.tasks == parser.get_default("tasks"):
        args.tasks = [task]
    if args.tasks != [task]:
        parser.error("--student fast runs the classification task only")
    docs, arm = TASKS[task]["bundle"] / "docs", "_quick" if args.quick else ""
    work = args.work or REPO / "scripts" / "_work" / f"kdml_fast{arm}"
    teacher_work = args.teacher_work or REPO / "scripts" / "_work" / f"kdml{arm}"
    main_results = args.main_results or (teacher_work / f"results_{task}.json" if args.quick else docs / "results.json")
    output = args.output or (work / f"results_fast_{task}.json" if args.quick else docs / "results_fast.json")
    readme = args.readme or (work / f"README_fast_{task}.md" if args.quick else docs / "README.md")
    evidence = FastEvidence(task, output, work, main_results, teacher_work, quick=args.quick, deadline=deadline)
    if args.dry_run:
        todo = evidence.plan(seeds)
        print(f"{task} (fast student): {len(todo)} item(s) left\n  " + "\n  ".join(todo))
        return
    if not args.report_only:
        try:
            evidence.select(seeds[0])
        except NoSelection as e:
            parser.error(f"{e} (main results: {main_results})")
        mine = [s for s in seeds if args.run_seeds is None or s in args.run_seeds]
        try:
            for seed in mine:
                evidence.baselines(seed)
            for seed in mine:
                evidence.combinations(seed, first_seed=seeds[0])
        except BudgetExhausted as e:
            logger.info("%s (fast student): %s; rerun the same command to continue", task, e)
        evidence.save()
    if args.quick and not readme.is_file():
        readme.parent.mkdir(parents=True, exist_ok=True)
        readme.write_text(f"# quick check of the fast student ({task})\n\n" + "\n".join(markers("fast")) + "\n")
    print(render_fast_section(readme, fast_markdown, evidence.results, main_results, args.bench))


if __name__ == "__main__":
    main()
