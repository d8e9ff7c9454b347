"""Evidence for the EMTKD bundle: every baseline and ablation, paired by seed, on two real cross-domain benchmarks.

Benchmarks (target-domain test split; each a run of the bundle's configs, exactly what users run):

- ``retinal`` (segmentation, ``configs/train.json``, the bundle's default): vessel segmentation, teachers on STARE and
  VEVIO, target AV-WIDE with 4 labelled and 12 unlabelled images, 4 validation and 10 test images, split by person;
  seed 0 uses the split of ``splits.json``, seed k > 0 re-draws the 30 AV-WIDE people with the same sizes. Records
  hold ``dice`` (foreground Dice, mean over test images) and ``auc`` (pixel ROC AUC pooled over the test images), both
  at the masks' own resolution; see ``RetinalEvidence`` for its protocol (the same methods, plus
  ``student_all_target_labels``, every choice on validation Dice);
- ``brats``: a *demo*, not evidence (``configs/train_classification.json``): BraTS 2015 sample, slice-level "tumour
  present", labelled source T1c, target FLAIR with 10% labelled slices and the rest unlabelled; split by patient, but
  source and target are co-registered scans of the same patients;
- ``pneumonia``: PneumoniaMNIST under seeded acquisition shifts (``monai_kd.data.DOMAINS``), teacher_a on
  ``source_a``, teacher_b on ``source_b``, target ``target`` with 5% labels (``configs/train_pneumonia.json``).

Methods (``method`` of each record); "DA teachers" are DANN teachers (``dann_weight`` 1), "source-only teachers" the
same architectures trained with ``dann_weight`` 0 (no target image ever reaches them):

- ``student_alone``: the student on the labelled target images only;
- ``teacher_direct``: each teacher applied to the target, DA and source-only (extras ``teacher``,
  ``domain_adaptation``);
- ``single_teacher_kd``: KD from one source-only teacher (the one with the higher validation AUC), no FixMatch;
- ``uniform_mtkd``: both source-only teachers, uniform weights, no FixMatch (prior multi-teacher KD);
- ``camkd``: both source-only teachers, CA-MKD's exact confidence weights (weighting ``camkd``), no FixMatch;
- ``emtkd``: DA teachers, adaptive weights (the kind chosen below), FixMatch;
- ``emtkd_no_da`` / ``emtkd_no_weighting`` / ``emtkd_no_ssl``: EMTKD with source-only teachers / uniform weights /
  ``fixmatch_weight`` 0 (the KD term on unlabelled images stays: only the FixMatch term is removed).

Every KD student sees the same labelled and unlabelled target images (KD on both); students of one seed start from
the same weights and see the same data order.

Rules fixed before looking at any test number:

- every model is the SWA average of the last half of its epochs (no checkpoint picking); all other hyper-parameters
  are the bundle's defaults (temperature 4, KD weight 1, FixMatch weight 1 and threshold 0.95, DANN weight 1);
- the one choice, EMTKD's weighting kind (``gate`` or ``confidence``), is made per benchmark on seed 0 by the
  higher *validation* AUC of the full EMTKD student, ties (difference < 0.002) broken by the lower validation
  negative log-likelihood; it is then used for ``emtkd``, ``emtkd_no_da`` and ``emtkd_no_ssl`` on every seed;
- the single teacher of ``single_teacher_kd`` is the source-only teacher with the higher validation AUC (per seed);
- test metrics are computed once per trained model and never feed back into any choice.

The fast-student arm (``--student fast``, :class:`FastEvidence`, ``pneumonia`` only): the same protocol with
``configs/student_fast_classification.json`` layered over the benchmark's train and evaluate configs, so the student
is the 13k-parameter ``FastStudent`` (what a user runs with that overlay); only ``student_alone`` and ``emtkd``, with
the weighting the main evidence chose on validation (its ``selection``; a benchmark it has not chosen runs the same
grid and rule with the fast student). The teachers are the main run's (``--teacher-work``: same configs and seed,
hence the same models) when their run folder finished there, else they are trained here through the same stage,
without the overlay. Records carry ``student: "fast"``.

Writes ``bundles/emtkd/docs/results.json`` (``runs``: one record per trained model with ``benchmark``, ``method``,
``seed``, ``accuracy``, ``auc`` and extras), the Markdown tables (mean ± std over seeds, paired gains) and
``teacher_weights.png`` (per-instance weights the EMTKD student's weighting gives the teachers on the target test
images) between the ``<!-- results:begin -->``/``<!-- results:end -->`` markers of ``bundles/emtkd/docs/README.md``.
Resumable: records already in the results file are skipped, and a stage whose run folder holds ``done.json`` is
not retrained, so it can run over several sessions. The fast arm writes ``docs/results_fast.json`` (the same
record fields plus ``student``) and the table between the ``<!-- fast:begin -->``/``<!-- fast:end -->`` markers,
each model beside its one-thread latency from ``docs/bench_latency.json`` (``scripts/bench_latency.py``, entry
``emtkd_pneumonia``: the PneumoniaMNIST form at 28 px), with the teachers' and default student's rows of
``results.json`` for comparison. Several processes may share the results file (one per
benchmark uses both cores of a 2-core CPU): about 9.5 min per seed on BraTS and 16 min on PneumoniaMNIST per core.

``--quick`` (1 seed, 1 epoch per stage, 3 iterations per epoch) checks the whole pipeline in a few minutes; it writes
into ``scripts/_work/emtkd_quick/`` (results, a copy of the README and the plot), never into the bundle.

Paired gains carry their 95% confidence interval: the Student-t interval over seeds of the per-seed differences
(``monai_kd.evidence``; ``monai-kd results BUNDLE`` prints the same intervals).

Example::

    python scripts/emtkd_evidence.py --seeds 0 1 2 3 4 --benchmarks brats pneumonia
    python scripts/emtkd_evidence.py --seeds 0 1 2 3 4 --benchmarks brats &      # or one process per benchmark
    python scripts/emtkd_evidence.py --seeds 0 1 2 3 4 --benchmarks pneumonia
    python scripts/emtkd_evidence.py --seeds 0 1 2 --benchmarks retinal
    python scripts/emtkd_evidence.py --quick
    python scripts/emtkd_evidence.py --report-only  # re-render the tables from docs/results.json, no training
    python scripts/emtkd_evidence.py --student fast --seeds 0 1 2   # the fast-student arm (PneumoniaMNIST)
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_kd.data.domain_datalist import domain_datalist
from monai_kd.data.retinal import write_retinal_datalist
from monai_kd.evidence import (MARKER, SPECS, RecordStore, check_seeds, ci_note, evidence_parser, mean_std, paired,
                               protocol_text, run_bundle, run_stage, setup_logging, signed_mean_std)
from monai_kd.evidence.evaluate import evaluate_bundle, predict_logits
from monai_kd.networks import load_pretrained
from monai_kd.reporting import (accuracy_latency_table, busy_latency_note, changes_table, markers, render_fast_section,
                                write_section)

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "emtkd"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
DATA = REPO.parent / "shared" / "data"
TEACHERS = ("teacher_a", "teacher_b")
METRICS = {"test_acc": "accuracy", "test_auc": "auc", "test_nll": "nll"}  # evaluate_classification.json -> record
BENCHMARKS: dict[str, dict[str, Any]] = {
    "brats": {"configs": ["train_classification.json"], "dataset_dir": DATA / "brats2015-sample"},
    "pneumonia": {
        "configs": ["train_classification.json", "train_pneumonia.json"],
        "dataset_dir": DATA / "pneumoniamnist",
    },
    "retinal": {"configs": ["train.json"], "dataset_dir": DATA / "retinal-vessels", "task": "segmentation"},
}
CLASSIFICATION = [b for b, spec in BENCHMARKS.items() if spec.get("task") != "segmentation"]
METHODS = (
    "student_alone",
    "teacher_direct",
    "single_teacher_kd",
    "uniform_mtkd",
    "camkd",
    "emtkd",
    "emtkd_no_da",
    "emtkd_no_weighting",
    "emtkd_no_ssl",
)
SELECTION_RULE = (
    "EMTKD weighting (gate or confidence) chosen on seed 0 by the higher validation AUC of the full EMTKD student, "
    "ties (< 0.002) broken by the lower validation NLL; single-teacher KD uses the source-only teacher with the "
    "higher validation AUC"
)
RETINAL_SELECTION_RULE = (
    "EMTKD weighting (gate or confidence) chosen on seed 0 by the higher validation Dice of the full EMTKD student, "
    "ties (< 0.005) broken by the higher validation pixel AUC; single-teacher KD uses the source-only teacher with "
    "the higher validation Dice"
)
RETINAL_METHODS = (*METHODS, "student_all_target_labels")
WEIGHTING_GRID = ("gate", "confidence")
FAST_OVERLAY = CONFIGS / "student_fast_classification.json"
FAST_METHODS = ("student_alone", "emtkd")  # the fast arm: the student alone against the bundle's method
TEACHER_STAGE = "run_teachers"  # never under an overlay: the teachers are the main protocol's
QUICK = {"teacher_epochs": 1, "max_epochs": 1, "epoch_length": 3}
MARK_BEGIN, MARK_END = markers()

logger = logging.getLogger("emtkd_evidence")


class Evidence:
    """Trains, evaluates and records every run of the protocol, resuming from earlier sessions.

    Args:
        work: folder of the run folders (checkpoints, ``done.json`` markers).
        output: results JSON file (read to resume, rewritten after every record).
        overrides: config overrides of every run (e.g. the quick mode's epochs).
    """

    # validation signals of every choice: the metric, the margin of a tie, the tie-breaker (+1 higher is better)
    selection_metric = "val_auc"
    tie_margin = 0.002
    tie_breaker = ("val_nll", -1)
    selection_rule = SELECTION_RULE
    #: config files layered over the benchmark's train and evaluate configs (not over the teachers' stage)
    overlays: tuple[Path, ...] = ()
    #: fields added to every record
    tag: dict[str, Any] = {}

    def __init__(self, work: Path, output: Path, overrides: dict[str, Any]) -> None:
        self.work = work
        self.output = output
        self.overrides = overrides
        self.store = RecordStore(output, self._key, defaults={"selection": {}})

    @property
    def results(self) -> dict[str, Any]:
        """The contents of the results file (``runs``, ``selection``, ...)."""
        return self.store.results

    @results.setter
    def results(self, value: dict[str, Any]) -> None:
        self.store.results = value

    @property
    def done(self) -> set:
        """Keys of the recorded runs."""
        return self.store.done

    # ------------------------------------------------------------------ bookkeeping

    @staticmethod
    def _key(record: dict) -> tuple:
        return (
            record["benchmark"],
            record["method"],
            record["seed"],
            record.get("teacher"),
            record.get("domain_adaptation"),
        )

    def save(self) -> None:
        """Write the results file (after every record, so an interrupted session loses nothing).

        Several processes may share one results file (e.g. one per benchmark, one per CPU core): the records and
        selections another process wrote since are merged in before writing (:func:`save_merged_results`).
        """
        self.store.save()

    def record(self, rec: dict) -> None:
        """Add one run record unless it is already there (saved at once)."""
        self.store.record({**rec, **self.tag})

    # ------------------------------------------------------------------ training

    def configs(self, benchmark: str, run_id: str | None = None, *extra: str) -> list[Path]:
        """The benchmark's config files, then ``extra`` ones, then :attr:`overlays` (unless ``run_id`` trains the
        teachers)."""
        overlays = self.overlays if run_id != TEACHER_STAGE else ()
        return [CONFIGS / c for c in (*BENCHMARKS[benchmark]["configs"], *extra)] + list(overlays)

    def train(self, benchmark: str, seed: int, run_id: str, name: str, **override: Any) -> Path:
        """Run ``run_id`` of the bundle into ``work/benchmark/seed<k>/name`` unless it finished before."""
        root = self.work / benchmark / f"seed{seed}" / name
        spec = BENCHMARKS[benchmark]
        stage = functools.partial(
            run_bundle, run_id, self.configs(benchmark, run_id), root, meta_file=META,
            dataset_dir=str(spec["dataset_dir"]), seed=seed, **self.overrides, **override,
        )
        # a folder without done.json is an interrupted run (partial checkpoints): run_stage removes it first
        run_stage(root, stage, name=f"{benchmark} seed {seed} {name} ({run_id})",
                  info={"run_id": run_id, "override": override})
        return root

    def student(
        self, benchmark: str, seed: int, teacher_root: Path, teachers: list[str], weighting: str, fixmatch: float
    ) -> Path:
        """A KD student from the teachers under ``teacher_root`` (run folder shared by identical configurations)."""
        name = f"student_{teacher_root.name}_{'+'.join(teachers)}_{weighting}_fm{fixmatch:g}"
        ckpts = {f"{t}#ckpt": str(teacher_root / "models" / f"{t}.pt") for t in TEACHERS}
        return self.train(
            benchmark,
            seed,
            "run_student",
            name,
            teachers=teachers,
            weighting=weighting,
            fixmatch_weight=fixmatch,
            **ckpts,
        )

    # ------------------------------------------------------------------ evaluation

    @functools.lru_cache(maxsize=8)
    def parser(self, benchmark: str, seed: int) -> ConfigParser:
        """The benchmark's bundle config for ``seed`` (networks, datalists, transforms)."""
        spec = BENCHMARKS[benchmark]
        parser = ConfigParser()
        parser.read_config([str(c) for c in self.configs(benchmark)])
        parser["dataset_dir"] = str(spec["dataset_dir"])
        parser["seed"] = seed
        parser["bundle_root"] = str(self.work)
        return parser

    @functools.lru_cache(maxsize=8)
    def split(self, benchmark: str, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (after the bundle's validation transforms) and labels of the target ``val`` or ``test`` split."""
        parser = self.parser(benchmark, seed)
        transform = parser.get_parsed_content("val_transforms")
        items = [transform(dict(i)) for i in parser.get_parsed_content(f"{split}_datalist")]
        x = torch.stack([torch.as_tensor(i["image"]).float() for i in items])
        y = torch.as_tensor(np.array([int(i["label"]) for i in items]))
        return x, y

    def network(self, benchmark: str, seed: int, key: str, ckpt: Path) -> torch.nn.Module:
        """A fresh network ``key`` of the config, filled from ``ckpt``, in eval mode on the CPU."""
        parser = self.parser(benchmark, seed)
        parser.ref_resolver.remove_resolved_content(key)
        return load_pretrained(parser.get_parsed_content(key, instantiate=True), ckpt).cpu().eval()

    @staticmethod
    def logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(net, x, 256)

    def evaluate(self, benchmark: str, seed: int, key: str, ckpt: Path) -> dict[str, Any]:
        """Test metrics plus validation AUC/accuracy/NLL and parameter count of one checkpoint.

        Through the bundle's ``evaluate_classification.json`` (``run_checkpoint``: network ``key`` filled from
        ``ckpt``), which writes ``eval/metrics.json`` and ``eval/val_metrics.json`` into the run folder of ``ckpt``.
        """
        spec = BENCHMARKS[benchmark]
        configs = self.configs(benchmark, None, "evaluate_classification.json")
        out: dict[str, Any] = {}
        for split in ("test", "val"):
            prefix = "" if split == "test" else f"{split}_"
            m = evaluate_bundle(configs, ckpt.parent.parent, f"{prefix}metrics.json", run_id="run_checkpoint",
                                eval_checkpoint=str(ckpt), eval_network=f"@{key}", eval_split=split, meta_file=META,
                                dataset_dir=str(spec["dataset_dir"]), seed=seed)[ckpt.stem]
            out.update({prefix + name: m[metric] for metric, name in METRICS.items()})
        out["parameters"] = m["parameters"]
        return out

    def weighting_module(
        self, benchmark: str, seed: int, student_root: Path, teachers: list[str], weighting: str
    ) -> torch.nn.Module:
        """The ``weighting`` module of the config for ``teachers``, with the state the student's run saved, in eval mode."""
        parser = self.parser(benchmark, seed)
        parser["teachers"] = list(teachers)
        parser.ref_resolver.remove_resolved_content("train#weightings")
        module = parser.get_parsed_content("train#weightings", instantiate=True)[weighting]
        parser["teachers"] = list(TEACHERS)
        state = torch.load(student_root / "models" / "teacher_weighting.pt", map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("weighting", state))
        module.eval()
        return module

    @torch.no_grad()
    def teacher_weights(
        self, benchmark: str, seed: int, student_root: Path, teacher_root: Path, teachers: list[str], weighting: str
    ) -> np.ndarray:
        """Per-instance teacher weights ``(N, K)`` the student's weighting gives on the target test images.

        The weighting sees the teachers' logits only (as on unlabelled data: no labels), the learned gate with the
        weights saved by the run (``models/teacher_weighting.pt``).
        """
        module = self.weighting_module(benchmark, seed, student_root, teachers, weighting)
        x, _ = self.split(benchmark, seed, "test")
        logits = torch.stack(
            [
                self.logits(self.network(benchmark, seed, f"{t}#network_def", teacher_root / "models" / f"{t}.pt"), x)
                for t in teachers
            ]
        )
        return module(logits).numpy()

    # ------------------------------------------------------------------ protocol

    #: methods a finished seed has recorded (a seed with all of them is skipped without retraining its teachers)
    methods = (
        "teacher_direct", "student_alone", "single_teacher_kd", "uniform_mtkd", "camkd",
        "emtkd", "emtkd_no_da", "emtkd_no_weighting", "emtkd_no_ssl",
    )

    def seed_complete(self, benchmark: str, seed: int) -> bool:
        """Whether every method of :attr:`methods` is recorded for ``benchmark`` and ``seed``."""
        have = {r["method"] for r in self.results["runs"] if r["benchmark"] == benchmark and r["seed"] == seed}
        return set(self.methods) <= have

    def teachers(self, benchmark: str, seed: int, adapted: bool) -> Path:
        """The run folder of the DANN (``adapted``) or source-only teachers of ``seed``, trained unless finished."""
        name, override = ("teachers_da", {}) if adapted else ("teachers_src", {"dann_weight": 0.0})
        return self.train(benchmark, seed, TEACHER_STAGE, name, **override)

    def run_seed(self, benchmark: str, seed: int) -> None:
        """Train and record every method of :attr:`methods` for one benchmark and seed."""
        if self.seed_complete(benchmark, seed):
            logger.info("skip %s seed %d (every method recorded)", benchmark, seed)
            return
        base = {"benchmark": benchmark, "seed": seed}
        roots: dict[bool, Path] = {}

        def teachers(adapted: bool) -> Path:  # trained (or found) at first use: a method subset may need one kind
            if adapted not in roots:
                roots[adapted] = self.teachers(benchmark, seed, adapted)
            return roots[adapted]

        teacher_val = {}
        if "teacher_direct" in self.methods:
            for adapted in (True, False):
                root = teachers(adapted)
                for t in TEACHERS:  # recorded as soon as they are trained (a long run leaves records behind early)
                    m = self.evaluate(benchmark, seed, f"{t}#network_def", root / "models" / f"{t}.pt")
                    teacher_val[(t, adapted)] = m[self.selection_metric]
                    self.record({**base, "method": "teacher_direct", **m, "teacher": t, "domain_adaptation": adapted})

        if "student_alone" in self.methods:
            alone = self.train(benchmark, seed, "run_student_alone", "student_alone")
            self.record(
                {
                    **base,
                    "method": "student_alone",
                    **self.evaluate(benchmark, seed, "network_def", alone / "models" / "student_alone.pt"),
                }
            )

        chosen = self.choose_weighting(benchmark, seed, teachers(True))
        best_src = max(TEACHERS, key=lambda t: teacher_val[(t, False)]) if teacher_val else None
        plan = {  # method -> (DANN teachers, teachers, weighting, fixmatch weight)
            "single_teacher_kd": (False, [best_src], "uniform", 0.0),
            "uniform_mtkd": (False, list(TEACHERS), "uniform", 0.0),
            "camkd": (False, list(TEACHERS), "camkd", 0.0),
            "emtkd": (True, list(TEACHERS), chosen, 1.0),
            "emtkd_no_da": (False, list(TEACHERS), chosen, 1.0),
            "emtkd_no_weighting": (True, list(TEACHERS), "uniform", 1.0),
            "emtkd_no_ssl": (True, list(TEACHERS), chosen, 0.0),
        }
        for method, (adapted, teacher_names, weighting, fixmatch) in plan.items():
            key = {"teacher": teacher_names[0]} if method == "single_teacher_kd" else {}
            if method not in self.methods or self._key({**base, "method": method, **key}) in self.done:
                continue
            root = teachers(adapted)
            student = self.student(benchmark, seed, root, teacher_names, weighting, fixmatch)
            rec = {
                **base,
                "method": method,
                **self.evaluate(benchmark, seed, "network_def", student / "models" / "model.pt"),
            }
            rec.update(key, weighting=weighting, fixmatch_weight=fixmatch, domain_adapted_teachers=adapted)
            if len(teacher_names) > 1:
                weights = self.teacher_weights(benchmark, seed, student, root, teacher_names, weighting)
                rec["test_teacher_weights"] = weights.mean(axis=0).tolist()
                if method == "emtkd":
                    rec["test_teacher_weights_per_instance"] = np.round(weights[:, 0], 4).tolist()
            self.record(rec)

    def choose_weighting(self, benchmark: str, seed: int, da: Path) -> str:
        """The EMTKD weighting kind of ``benchmark``: chosen on validation on the first seed, then reused."""
        selection = self.results["selection"].get(benchmark)
        if selection and "chosen" in selection:
            return selection["chosen"]
        grid = []
        for weighting in WEIGHTING_GRID:
            student = self.student(benchmark, seed, da, list(TEACHERS), weighting, 1.0)
            m = self.evaluate(benchmark, seed, "network_def", student / "models" / "model.pt")
            metric, (breaker, sign) = self.selection_metric, self.tie_breaker
            grid.append({"weighting": weighting, metric: m[metric], breaker: m[breaker], "seed": seed})
        best = grid[0]
        for g in grid[1:]:
            if g[metric] > best[metric] + self.tie_margin or (
                abs(g[metric] - best[metric]) <= self.tie_margin and sign * (g[breaker] - best[breaker]) > 0
            ):
                best = g
        self.results["selection"][benchmark] = {"rule": self.selection_rule, "grid": grid, "chosen": best["weighting"]}
        self.save()
        return best["weighting"]


class FastEvidence(Evidence):
    """The fast-student arm: :class:`Evidence` with ``configs/student_fast_classification.json`` over every student run
    and evaluation, :data:`FAST_METHODS` only, the main run's teachers and the main evidence's weighting.

    Args:
        work: folder of the fast arm's run folders (students; teachers only when they are not in ``teacher_work``).
        output: ``results_fast.json`` (read to resume, rewritten after every record).
        overrides: config overrides of every run.
        teacher_work: the main evidence's work folder: its finished teacher run folders (``done.json``) are reused.
        main_results: the main evidence's ``results.json``: its weighting ``selection`` is reused.
    """

    methods = FAST_METHODS
    overlays = (FAST_OVERLAY,)
    tag = {"student": "fast"}

    def __init__(
        self, work: Path, output: Path, overrides: dict[str, Any], teacher_work: Path, main_results: Path
    ) -> None:
        super().__init__(work, output, overrides)
        self.teacher_work = teacher_work
        self.results["protocol"] = protocol_text(__doc__)
        main = json.loads(main_results.read_text()).get("selection", {}) if main_results.is_file() else {}
        source = f"{main_results.name} (main evidence)"
        for benchmark, entry in main.items():
            if "chosen" in entry:
                self.results["selection"].setdefault(benchmark, {**entry, "source": source})

    def teachers(self, benchmark: str, seed: int, adapted: bool) -> Path:
        """The main run's teachers when that run folder finished, else :meth:`Evidence.teachers` (no overlay)."""
        reused = self.teacher_work / benchmark / f"seed{seed}" / ("teachers_da" if adapted else "teachers_src")
        if (reused / MARKER).is_file():
            logger.info("%s seed %d: reusing the teachers of %s", benchmark, seed, reused)
            return reused
        return super().teachers(benchmark, seed, adapted)


class RetinalEvidence(Evidence):
    """The protocol on the segmentation benchmark ``retinal`` (records ``dice`` / ``auc`` instead of accuracy / AUC).

    Same methods and rules as :class:`Evidence`, with validation *Dice* as the selection signal (pixel AUC of a
    vessel map saturates less than image-level AUC, but Dice is what the student is used for):

    - EMTKD's weighting kind (``gate`` or ``confidence``) is chosen on seed 0 by the higher validation Dice of the
      full EMTKD student, ties (< 0.005) broken by the higher validation AUC; the single teacher of
      ``single_teacher_kd`` is the source-only teacher with the higher validation Dice (per seed);
    - ``student_all_target_labels``: the student trained alone on all 16 target training people *with* their masks
      (the 4 labelled and the 12 otherwise unlabelled ones), an upper reference;
    - seed 0 uses the target split of ``splits.json``; seed k > 0 re-draws the people with the same sizes
      (``split_seed`` k), so seeds vary the split as well as the initial weights.
    """

    methods = Evidence.methods + ("student_all_target_labels",)
    selection_metric = "val_dice"
    tie_margin = 0.005
    tie_breaker = ("val_auc", 1)
    selection_rule = RETINAL_SELECTION_RULE

    def _split_seed(self, seed: int) -> int | None:
        return None if seed == 0 else seed

    def train(self, benchmark: str, seed: int, run_id: str, name: str, **override: Any) -> Path:
        """As :meth:`Evidence.train`, with the seed's target split."""
        return super().train(benchmark, seed, run_id, name, split_seed=self._split_seed(seed), **override)

    @functools.lru_cache(maxsize=8)
    def parser(self, benchmark: str, seed: int) -> ConfigParser:
        parser = super().parser(benchmark, seed)
        parser["split_seed"] = self._split_seed(seed)
        parser["bundle_root"] = str(self.work / benchmark / f"seed{seed}")
        return parser

    @functools.lru_cache(maxsize=8)
    def items(self, benchmark: str, seed: int, split: str) -> list[dict]:
        """Target ``val`` or ``test`` items at the masks' own resolution."""
        parser = self.parser(benchmark, seed)
        return domain_datalist(parser.get_parsed_content("datalist"), split, channel=parser["channel"])

    def evaluate(self, benchmark: str, seed: int, key: str, ckpt: Path) -> dict[str, Any]:
        """Test Dice / pixel AUC plus validation Dice / AUC and parameter count of one checkpoint.

        Through the bundle's ``evaluate.json`` (``run_checkpoint``: network ``key`` filled from ``ckpt``, the
        seed's target split, whole images at the masks' resolution), written into the run folder of ``ckpt``.
        """
        spec = BENCHMARKS[benchmark]
        configs = self.configs(benchmark, None, "evaluate.json")
        out: dict[str, Any] = {}
        for split in ("test", "val"):
            prefix = "" if split == "test" else f"{split}_"
            m = evaluate_bundle(configs, ckpt.parent.parent, f"{prefix}metrics.json", run_id="run_checkpoint",
                                eval_checkpoint=str(ckpt), eval_network=f"@{key}", eval_split=split, meta_file=META,
                                dataset_dir=str(spec["dataset_dir"]), seed=seed,
                                split_seed=self._split_seed(seed))[ckpt.stem]
            out.update({f"{prefix}dice": m["dice"], f"{prefix}auc": m["auc"]})
        out["parameters"] = m["parameters"]
        return out

    @torch.no_grad()
    def teacher_weights(
        self, benchmark: str, seed: int, student_root: Path, teacher_root: Path, teachers: list[str], weighting: str
    ) -> np.ndarray:
        """Per-image teacher weights ``(N, K)`` of the student's weighting on the whole target test images."""
        module = self.weighting_module(benchmark, seed, student_root, teachers, weighting)
        parser = self.parser(benchmark, seed)
        preprocess, inferer = (parser.get_parsed_content(k) for k in ("inference_transforms", "sliding_window"))
        nets = [self.network(benchmark, seed, f"{t}#network_def", teacher_root / "models" / f"{t}.pt") for t in teachers]
        weights = []
        for item in self.items(benchmark, seed, "test"):
            x = torch.as_tensor(np.asarray(preprocess({"image": item["image"]})["image"]), dtype=torch.float32)[None]
            weights.append(module(torch.stack([inferer(x, net).float() for net in nets]))[0])
        return torch.stack(weights).numpy()

    def run_seed(self, benchmark: str, seed: int) -> None:
        """Every method of :class:`Evidence`, then the student trained on all target training labels."""
        super().run_seed(benchmark, seed)
        base = {"benchmark": benchmark, "seed": seed, "method": "student_all_target_labels"}
        if self._key(base) in self.done:
            return
        datalist = write_retinal_datalist(
            BENCHMARKS[benchmark]["dataset_dir"],
            self.work / benchmark / f"seed{seed}" / "datalists" / "all_target_labels.json",
            self._split_seed(seed),
            all_target_labels=True,
        )
        root = self.train(benchmark, seed, "run_student_alone", "student_all_target_labels", datalist=datalist)
        self.record({**base, **self.evaluate(benchmark, seed, "network_def", root / "models" / "student_alone.pt")})



# ---------------------------------------------------------------------- report


def _mean_std(values: list[float]) -> str:
    return mean_std(values)


def _mean_weight_lines(runs: list[dict]) -> list[str]:
    """The mean teacher weights of the EMTKD students on the target test images (one line, or none)."""
    emtkd = [r for r in runs if r["method"] == "emtkd" and "test_teacher_weights" in r]
    if not emtkd:
        return []
    mean_w = np.mean([r["test_teacher_weights"] for r in emtkd], axis=0)
    return [
        "- mean weight of the EMTKD weighting on the target test images: "
        + ", ".join(f"{t} {w:.3f}" for t, w in zip(TEACHERS, mean_w))
    ]


def _row_name(record: dict) -> str:
    """The table row of a record (``teacher_direct`` split by teacher and adaptation)."""
    if record["method"] != "teacher_direct":
        return record["method"]
    return f"teacher_direct: {record['teacher']} ({'DANN' if record['domain_adaptation'] else 'source only'})"


def _rows(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """Table rows in protocol order; ``teacher_direct`` split by teacher and adaptation."""
    rows = []
    for method in METHODS:
        rs = [r for r in runs if r["method"] == method]
        if method == "teacher_direct":
            for adapted in (True, False):
                for t in TEACHERS:
                    sub = [r for r in rs if r.get("teacher") == t and r.get("domain_adaptation") == adapted]
                    if sub:
                        rows.append((f"teacher_direct: {t} ({'DANN' if adapted else 'source only'})", sub))
        elif rs:
            rows.append((method, rs))
    return rows


def markdown(results: dict, plot_name: str | None, before: list[dict] | None = None) -> str:
    """Tables of target-test accuracy/AUC (mean ± std over seeds), paired gains, the weight plot and, given the
    records of an earlier run (``before``), how each mean moved."""
    lines = []
    runs = results["runs"]
    for benchmark in [b for b in CLASSIFICATION if any(r["benchmark"] == b for r in runs)]:
        rs = [r for r in runs if r["benchmark"] == benchmark]
        seeds = sorted({r["seed"] for r in rs})
        lines += [
            f"### {benchmark} (target-domain test split, {len(seeds)} seed(s): {seeds})",
            "",
            "| method | n | parameters | test accuracy | test AUC | val AUC |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, sub in _rows(rs):
            lines.append(
                f"| {name} | {len(sub)} | {sub[0]['parameters']:,} | {_mean_std([r['accuracy'] for r in sub])} | "
                f"{_mean_std([r['auc'] for r in sub])} | {_mean_std([r['val_auc'] for r in sub])} |"
            )
        lines.append("")
        students = [(name, sub) for name, sub in _rows(rs) if not name.startswith("teacher_direct")]
        for metric in ("accuracy", "auc"):
            name, sub = max(students, key=lambda ns: statistics.mean(r[metric] for r in ns[1]))
            lines.append(f"- highest mean test {metric} among the students: {name} ({statistics.mean(r[metric] for r in sub):.3f})")
        for other in ("uniform_mtkd", "student_alone", "camkd", "emtkd_no_da", "emtkd_no_weighting", "emtkd_no_ssl"):
            gain = paired(SPECS["emtkd"], runs, benchmark, "emtkd", other, "auc")
            if gain.n:
                lines.append(
                    f"- test-AUC gain of emtkd over {other}: {_mean_std(list(gain.differences))}{ci_note(gain)}"
                    f" (emtkd higher on {gain.wins}/{gain.n} seeds)"
                )
        sel = results.get("selection", {}).get(benchmark)
        if sel:
            grid = ", ".join(
                f"{g['weighting']}: val AUC {g['val_auc']:.4f} / NLL {g['val_nll']:.4f}" for g in sel["grid"]
            )
            lines.append(f"- weighting selection on validation ({grid}): **{sel['chosen']}**")
        lines += _mean_weight_lines(rs)
        lines.append("")
    if plot_name:
        lines += [f"![learned teacher weights]({plot_name})", ""]
    changed = changes_table(
        before or [],
        [r for r in runs if r["benchmark"] in CLASSIFICATION],
        lambda r: (r["benchmark"], _row_name(r)),
        {"test accuracy": lambda r: r["accuracy"], "test AUC": lambda r: r["auc"]},
        lambda g: f"{g[0]} {g[1]}",
    )
    if changed:
        lines += [
            "### What the correctness fixes changed",
            "",
            "Means over seeds before the correctness fixes (BatchNorm statistics of SWA models recomputed, the gate "
            "trained on labels, exact CA-MKD weights, subject-level splits) and after, same seeds and protocol:",
            "",
            changed,
            "",
        ]
    lines.append(f"Selection rule: {SELECTION_RULE}.")
    return "\n".join(lines)


def fast_markdown(results: dict, main: dict, bench: dict | None) -> str:
    """The fast arm beside the teachers and the default student: test metrics and one-thread latency, paired gains.

    Args:
        results: the fast arm's results (``results_fast.json``).
        main: the main evidence's results (``results.json``): the teachers' and default student's rows.
        bench: ``docs/bench_latency.json`` (or ``None``); entry ``emtkd_pneumonia``.
    """
    lines = busy_latency_note(bench, "python scripts/emtkd_evidence.py --student fast --report-only")
    fast = results["runs"]
    for benchmark in [b for b in CLASSIFICATION if any(r["benchmark"] == b for r in fast)]:
        mine = [{**r, "method": f"fast {r['method']}"} for r in fast if r["benchmark"] == benchmark]
        other = [r for r in main.get("runs", []) if r["benchmark"] == benchmark]
        rows = [([f"teacher_direct: {t} (DANN)"], [r for r in other if r["method"] == "teacher_direct"
                 and r.get("teacher") == t and r.get("domain_adaptation")], t) for t in TEACHERS]
        rows += [([method], [r for r in other if r["method"] == method], "student") for method in FAST_METHODS]
        rows += [([f"fast {method}"], [r for r in mine if r["method"] == f"fast {method}"], "student_fast")
                 for method in FAST_METHODS]
        seeds = sorted({r["seed"] for r in mine})
        lines += [f"### {benchmark}: fast student (`configs/student_fast_classification.json`) beside the teachers and "
                  f"the default student (target-domain test split, fast arm seeds {seeds})", "",
                  *accuracy_latency_table(["model"], [row for row in rows if row[1]], bench, f"emtkd_{benchmark}"), ""]
        both = mine + other
        for arm, baseline in (("fast emtkd", "fast student_alone"), ("fast emtkd", "emtkd"),
                              ("fast emtkd", "teacher_direct: teacher_a (DANN)"),
                              ("fast emtkd", "teacher_direct: teacher_b (DANN)")):
            for metric in ("accuracy", "auc"):
                gain = paired(SPECS["emtkd"], both, benchmark, arm, baseline, metric)
                if gain.n:
                    lines.append(f"- test-{'AUC' if metric == 'auc' else metric} difference {arm} minus {baseline}: "
                                 f"{signed_mean_std(list(gain.differences))}{ci_note(gain)} ({arm} higher on "
                                 f"{gain.wins}/{gain.n} seeds)")
        sel = results.get("selection", {}).get(benchmark, {})
        source = sel.get("source", "chosen by this arm on validation")
        lines += ["", f"Weighting: **{sel.get('chosen')}** ({source}).", ""]
    if results.get("overrides"):
        lines += [f"**Not evidence**: runs with overrides {results['overrides']} (a pipeline check).", ""]
    return "\n".join(lines) if fast else "No fast-student records yet (the run is resumable)."


def markdown_retinal(results: dict) -> str:
    """Tables of the ``retinal`` benchmark: target test Dice / pixel AUC (mean ± std over seeds) and paired gains."""
    rs = [r for r in results["runs"] if r["benchmark"] == "retinal"]
    if not rs:
        return "No retinal records yet: run `python scripts/emtkd_evidence.py --seeds 0 1 2 --benchmarks retinal`."
    seeds = sorted({r["seed"] for r in rs})
    lines = [
        f"### retinal (AV-WIDE test images, {len(seeds)} seed(s): {seeds})",
        "",
        "| method | n | parameters | test Dice | test pixel AUC | val Dice |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = _rows(rs) + [(m, [r for r in rs if r["method"] == m]) for m in RETINAL_METHODS[len(METHODS) :]]
    rows = [(name, sub) for name, sub in rows if sub]
    for name, sub in rows:
        lines.append(
            f"| {name} | {len(sub)} | {sub[0]['parameters']:,} | {_mean_std([r['dice'] for r in sub])} | "
            f"{_mean_std([r['auc'] for r in sub])} | {_mean_std([r['val_dice'] for r in sub])} |"
        )
    lines.append("")
    for other in ("uniform_mtkd", "student_alone", "camkd", "emtkd_no_da", "emtkd_no_weighting", "emtkd_no_ssl"):
        for metric in ("dice", "auc"):
            gain = paired(SPECS["emtkd"], rs, "retinal", "emtkd", other, metric)
            if gain.n:
                lines.append(
                    f"- test-{metric} gain of emtkd over {other}: {_mean_std(list(gain.differences))}{ci_note(gain)}"
                    f" (emtkd higher on {gain.wins}/{gain.n} seeds)"
                )
    sel = results.get("selection", {}).get("retinal")
    if sel:
        grid = ", ".join(f"{g['weighting']}: val Dice {g['val_dice']:.4f} / AUC {g['val_auc']:.4f}" for g in sel["grid"])
        lines.append(f"- weighting selection on validation ({grid}): **{sel['chosen']}**")
    lines += _mean_weight_lines(rs)
    overrides = results.get("overrides") or {}
    if overrides:
        lines.append(f"- **not evidence**: runs with overrides {overrides} (a pipeline check)")
    lines += ["", f"Selection rule: {RETINAL_SELECTION_RULE}."]
    return "\n".join(lines)


def plot_weights(results: dict, path: Path) -> bool:
    """Histogram per benchmark of the EMTKD weight of teacher_a on the target test images (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if r["method"] == "emtkd" and "test_teacher_weights_per_instance" in r]
    benchmarks = [b for b in CLASSIFICATION if any(r["benchmark"] == b for r in runs)]
    if not benchmarks:
        return False
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 3.6), squeeze=False)
    for ax, benchmark in zip(axes[0], benchmarks):
        rec = min((r for r in runs if r["benchmark"] == benchmark), key=lambda r: r["seed"])
        w = np.asarray(rec["test_teacher_weights_per_instance"])
        ax.hist(w, bins=np.linspace(0, 1, 41), color="tab:blue", alpha=0.8)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="uniform")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"weight of {TEACHERS[0]} (1 - weight of {TEACHERS[1]})")
        ax.set_ylabel("target test images")
        ax.set_title(f"{benchmark}: {rec['weighting']} weighting, seed {rec['seed']}")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True



def main(argv: list[str] | None = None) -> None:
    parser = evidence_parser(__doc__, quick="1 seed, 1 epoch per stage, 3 iterations per epoch; writes into the work folder")
    parser.add_argument("--benchmarks", nargs="+", default=["retinal", "pneumonia"], choices=list(BENCHMARKS))
    parser.add_argument("--work", type=Path, default=None, help="run folders (default scripts/_work/emtkd[_fast][_quick])")
    parser.add_argument(
        "--output", type=Path, default=None, help="results JSON (default docs/results[_fast].json of the bundle)"
    )
    parser.add_argument("--readme", type=Path, default=None, help="README with result markers (default the bundle's)")
    parser.add_argument("--student", choices=["default", "fast"], default="default",
                        help="fast: the fast-student arm (FastEvidence, pneumonia only) into results_fast.json")
    parser.add_argument("--teacher-work", type=Path, default=REPO / "scripts" / "_work" / "emtkd",
                        help="--student fast: the main evidence's work folder, whose finished teachers are reused")
    parser.add_argument("--main-results", type=Path, default=BUNDLE / "docs" / "results.json",
                        help="--student fast: the main evidence (weighting reused, teachers' rows shown)")
    parser.add_argument("--bench", type=Path, default=REPO / "docs" / "bench_latency.json",
                        help="--student fast: latency benchmark (scripts/bench_latency.py)")
    args = parser.parse_args(argv)
    setup_logging()
    if args.student == "fast":
        fast_main(parser, args)
        return
    seeds, overrides, work, output, readme = _run_files(parser, args, "")
    start = time.perf_counter()
    evidence = Evidence(work, output, overrides)
    if not args.report_only:
        evidence.results["protocol"] = protocol_text(__doc__)
        evidence.results["overrides"] = overrides
        for benchmark in args.benchmarks:
            runner = RetinalEvidence(work, output, overrides) if benchmark == "retinal" else evidence
            runner.results["overrides"] = overrides
            for seed in seeds:
                runner.run_seed(benchmark, seed)
            if runner is not evidence:
                evidence.results = runner.results  # the other benchmarks' records are merged into the same file
        evidence.save()
    if set(args.benchmarks) & set(CLASSIFICATION):
        plot = readme.parent / "teacher_weights.png"
        before_file = output.with_name("results_before_correctness.json")
        before = json.loads(before_file.read_text())["runs"] if before_file.is_file() else None
        table = markdown(evidence.results, plot.name if plot_weights(evidence.results, plot) else None, before)
        write_section(readme, table)
        print(table)
    if "retinal" in args.benchmarks:
        retinal = markdown_retinal(evidence.results)
        write_section(readme, retinal, name="retinal")
        print(retinal)
    logger.info("total %.0f s; results in %s, table in %s", time.perf_counter() - start, output, readme)


def _run_files(parser: Any, args: Any, arm: str) -> tuple[list[int], dict[str, Any], Path, Path, Path]:
    """Seeds, overrides, work folder, results file and README of a run (``arm``: ``""`` or ``"_fast"``).

    ``--quick`` runs one seed and writes into its work folder only (results and a copy of the README); otherwise at
    least 3 seeds are required (unless ``--report-only``) and the results and README are the bundle's.
    """
    results = f"results{arm}.json"
    if args.quick:
        work = args.work or REPO / "scripts" / "_work" / f"emtkd{arm}_quick"
        readme = args.readme or work / "README.md"
        if not readme.is_file():
            readme.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(BUNDLE / "docs" / "README.md", readme)
        return args.seeds[:1], dict(QUICK), work, args.output or work / results, readme
    if not args.report_only:
        check_seeds(parser, args.seeds, "use at least 3 seeds (or --quick): single-seed AUC on these small target "
                                        "test splits swings by points")
    work = args.work or REPO / "scripts" / "_work" / f"emtkd{arm}"
    return (args.seeds, {}, work, args.output or BUNDLE / "docs" / results,
            args.readme or BUNDLE / "docs" / "README.md")


def fast_main(parser: Any, args: Any) -> None:
    """``--student fast``: :class:`FastEvidence` on PneumoniaMNIST, then the README's ``fast`` section."""
    if args.benchmarks == parser.get_default("benchmarks"):
        args.benchmarks = ["pneumonia"]
    if args.benchmarks != ["pneumonia"]:
        parser.error("--student fast runs the pneumonia benchmark only")
    seeds, overrides, work, output, readme = _run_files(parser, args, "_fast")
    evidence = FastEvidence(work, output, overrides, args.teacher_work, args.main_results)

    def render() -> str:
        return render_fast_section(readme, fast_markdown, evidence.results, args.main_results, args.bench)

    if not args.report_only:
        evidence.results["overrides"] = overrides
        for seed in seeds:
            evidence.run_seed("pneumonia", seed)
            render()
        evidence.save()
    print(render())


if __name__ == "__main__":
    main()
