"""Evidence for the MMKD bundle: six weightings x two student sizes x seeds, on PneumoniaMNIST and BreastMNIST.

For every dataset the three teachers (ResNet, DenseNet, plain CNN) are trained once, with ``teacher_seed`` 0,
through ``bundles/mmkd/configs/train.json`` (``run_teachers``, exactly what users run) and shared by every student
run of that dataset, as pre-trained teachers are. Then, for every seed, student size and method, one student:

- ``student_alone``: cross-entropy only (``run_student_alone``);
- ``uniform``, ``camkd``, ``gate``: multi-teacher KD with uniform, CA-MKD and learned-gate weights;
- ``mmkd_logits``: meta-learned weights from logits (output-layer branch only);
- ``mmkd_logits_features``: meta-learned weights from logits and pooled features, plus the intermediate-layer
  branch (per-teacher feature hints weighted by a second meta-weight network).

Rules fixed before any test number was seen:

- every student is the SWA average of the last half of its epochs (no checkpoint picking);
- the teachers' recipe (epochs, stem stride, normalisation, learning rate, weight decay: bundle overrides) is
  chosen per dataset by the lowest mean validation NLL of the three teachers over ``TEACHER_RECIPE_GRID``
  (``selection`` in ``results.json`` keeps every candidate's validation NLL, AUC and accuracy per teacher);
- all other settings are the bundle's defaults (no grid search: the CPU budget went to seeds and methods);
  BreastMNIST runs its config ``train_breastmnist.json`` (students: ``--breast-student-epochs``, 20);
- the quiz role (10 % of the training split, ``split_seed`` 0) is the only data MMKD holds out of the student's
  loss; every other method trains on the whole training split, so all methods see the same labelled images;
- "teachers clearly better than the students" is checked on validation only: each teacher's validation NLL, AUC and
  accuracy, and those of the uniform mixture of the three (what uniform KD distils from), against the best student
  alone's (``teacher_check`` in ``results.json``);
- test metrics are computed once per trained model and never feed back into any choice;
- every model is scored from its checkpoint by the bundle's own ``configs/evaluate.json`` (run id
  ``run_checkpoint``, ``eval_split`` test and val; a teacher by ``--eval_network @teachers --eval_member NAME``, the
  mixture by ``--eval_member "['resnet','densenet','cnn']"``).

Writes ``bundles/mmkd/docs/results.json``: ``runs`` (one record per student: ``dataset``, ``student``, ``method``,
``seed``, ``accuracy``, ``auc`` on the test split, validation ``val_accuracy``/``val_auc``/``val_nll``,
``parameters``, ``seconds``, ``seconds_per_iteration``), ``teachers`` (validation and test metrics per teacher of the
chosen recipe), ``teacher_candidates`` (the same for every candidate recipe), ``teacher_mixture`` (the same for the
uniform mixture of the chosen teachers), ``teacher_check``, ``weights`` (mean
learned weight per teacher when that teacher was right / wrong on validation), ``timing`` (bilevel step time relative
to the plain multi-teacher step); the plot ``docs/mmkd_weights.png``; and the Markdown tables between the
``results`` markers of ``bundles/mmkd/docs/README.md``.

``--students fast`` adds the bundle's latency-aware student (``configs/student_fast.json``, a ``FastStudent``,
layered over the dataset's training configs and under ``evaluate.json``; records with ``student`` ``fast``) with the
same teachers, methods and seeds (issue 20); the README then shows its accuracy beside its latency from
``docs/bench_latency.json`` (``scripts/bench_latency.py``; no latency is measured here). It is not in the default
students because it is not cheap: the three teachers' forward passes (68M multiply-accumulates per image, against 0.2M
for the fast student and 3.3M for the large one, ``docs/bench_latency.json``) dominate every distillation step, so a
fast-student run costs about as much as a small-student run, and the fast arm adds about half the default students'
training time.

Resumable and shared: records already in ``results.json`` are skipped, and every run is written as soon as it is
scored. Several processes (one per CPU core) may run the same command on the same ``--work`` folder: each teacher
recipe and each student run is claimed (``monai_kd.evidence.claim``) while it trains; a run another live process
holds is left to it (it records it); the teachers a student needs, and every candidate recipe of the selection, are
waited for; a claim whose process has died is taken over, and an interrupted run folder is trained again from the
start. Records are merged through the results file, so every process ends with the same teacher choice and tables.
Run folders are not kept in git: on a machine that has the records but not the folders (a new session), only the
chosen recipe's teachers are trained again, and the run stops unless they score as the recorded ones did
(``teacher_restored``: the largest difference of any score, each time they were restored).

Paired gains carry their 95% confidence interval: the Student-t interval over seeds of the per-seed differences
(``monai_kd.evidence``; ``monai-kd results BUNDLE`` prints the same intervals).

Example::

    nice -n 5 python scripts/mmkd_evidence.py --seeds 0 1 2   # resumable; many core-hours
    # or one process per CPU core, sharing the runs (scripts/_work/mmkd) and results.json:
    nice -n 5 python scripts/mmkd_evidence.py --seeds 0 1 2 & nice -n 5 python scripts/mmkd_evidence.py --seeds 0 1 2
    # the fast student of issue 20, with the same teachers (or add it to --students small large fast):
    nice -n 5 python scripts/mmkd_evidence.py --seeds 0 1 2 --students fast
    python scripts/mmkd_evidence.py --report-only   # re-render the tables and the plot from results.json
    # int8 (issue 20): quantise the recorded students whose run folders are in --work, and score them
    python scripts/mmkd_evidence.py --int8 --students small large fast --seeds 0 1 2

``--int8`` trains nothing: every recorded student of the selection whose checkpoint is in the work folder is exported
to ONNX, quantised by ONNX Runtime (static, QDQ, per-channel int8 weights, calibrated on 256 training images drawn with
the run's seed, as ``monai-kd export --int8``) and scored on the test split beside its fp32 model by the same code
(``int8`` in ``results.json``: ``dataset/student/method/seed`` -> fp32 and int8 accuracy, AUC, NLL and the fraction
of test images where both predict the same class); the README shows them beside both models' ONNX Runtime latency.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_kd.data import medmnist_datalist
from monai_kd.evidence import (MARKER, SPECS, RecordStore, ci, evidence_parser, paired, protocol_text, run_stage,
                               setup_logging, share_runs, t_interval)
from monai_kd.evidence.evaluate import evaluate_bundle
from monai_kd.networks import load_pretrained, member_name
from monai_kd.reporting import write_section

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "mmkd"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
RESULTS = BUNDLE / "docs" / "results.json"
README = BUNDLE / "docs" / "README.md"
PLOT = BUNDLE / "docs" / "mmkd_weights.png"
BENCH = REPO / "docs" / "bench_latency.json"
WORK = REPO / "scripts" / "_work" / "mmkd"
DATA = REPO.parent / "shared" / "data"
DATASETS = ("breastmnist", "pneumoniamnist")
STUDENTS = ("small", "large")  # the two sizes of ``student_capacities`` (issue 12): the default
FAST = "fast"  # the latency-aware student of issue 20 (``--students fast``)
ALL_STUDENTS = (*STUDENTS, FAST)
#: student -> the config layered over the dataset's training configs (and under ``evaluate.json``) to build it
STUDENT_CONFIGS = {FAST: "student_fast.json"}
#: student -> its model in ``scripts/bench_latency.py``'s ``mmkd`` records (the small student is not benchmarked)
LATENCY_MODELS = {"large": "student", FAST: "student_fast"}
METHODS = ("student_alone", "uniform", "camkd", "gate", "mmkd_logits", "mmkd_logits_features")
#: method -> bundle overrides
METHOD_OVERRIDES = {
    "uniform": {"method": "uniform"},
    "camkd": {"method": "camkd"},
    "gate": {"method": "gate"},
    "mmkd_logits": {"method": "mmkd", "feature_branch": False},
    "mmkd_logits_features": {"method": "mmkd", "feature_branch": True},
}
#: MedMNIST v2 (Yang et al. 2023), Table 3, test split, ResNet-18 (28): (AUC, ACC)
MEDMNIST_RESNET18 = {"pneumoniamnist": (0.944, 0.854), "breastmnist": (0.901, 0.863)}
RESNET18_PARAMETERS = 11_172_162
#: teacher recipes: bundle overrides of the teacher stage, explicit about every setting a recipe varies (so they mean
#: the same on top of either dataset's config); the bundle's defaults are the chosen recipes (PneumoniaMNIST:
#: ``stem1bn_e12``, BreastMNIST: ``stem1bn_e20_lr1e3``). ``legacy`` is the recipe of the first evidence round
#: (stride-2 stems, instance-normalised CNN); ``stem1`` keeps full resolution in the ResNet and CNN stems; ``bn``
#: normalises the CNN by batch.
BASE = {"teacher_learning_rate": 0.002, "teacher_weight_decay": 0.0001}
LEGACY = {**BASE, "teachers_def#resnet#conv1_t_stride": 2, "teachers_def#cnn#strides": [2, 2, 2, 2],
          "teachers_def#cnn#norm": "instance"}
STEM1 = {**BASE, "teachers_def#resnet#conv1_t_stride": 1, "teachers_def#cnn#strides": [1, 2, 2, 2]}
STEM1BN = {**STEM1, "teachers_def#cnn#norm": "batch"}
TEACHER_RECIPES = {
    "legacy_e10": {**LEGACY, "teacher_epochs": 10},
    "legacy_e20": {**LEGACY, "teacher_epochs": 20},
    "legacy_e60": {**LEGACY, "teacher_epochs": 60},
    "stem1_e20": {**STEM1, "teachers_def#cnn#norm": "instance", "teacher_epochs": 20},
    "bn_e20": {**LEGACY, "teachers_def#cnn#norm": "batch", "teacher_epochs": 20},
    "stem1bn_e12": {**STEM1BN, "teacher_epochs": 12},
    "stem1bn_e20": {**STEM1BN, "teacher_epochs": 20},
    "stem1bn_e40": {**STEM1BN, "teacher_epochs": 40},
    "stem1bn_e20_wd05": {**STEM1BN, "teacher_epochs": 20, "teacher_weight_decay": 0.05},
    "stem1bn_e20_lr1e3": {**STEM1BN, "teacher_epochs": 20, "teacher_learning_rate": 0.001},
}
#: candidate teacher recipes per dataset, chosen on mean validation NLL of the three teachers (``Evidence.teachers``)
TEACHER_RECIPE_GRID = {
    "pneumoniamnist": ["legacy_e10", "stem1bn_e12"],
    "breastmnist": ["legacy_e20", "legacy_e60", "stem1_e20", "bn_e20", "stem1bn_e20", "stem1bn_e40", "stem1bn_e20_wd05",
                    "stem1bn_e20_lr1e3"],
}
TARGETS = {"pneumoniamnist": (0.97, 0.90), "breastmnist": (0.92, 0.87)}  # (AUC, ACC) of the issue
#: evaluate.json's metrics -> record fields, per split (the names the records have always had)
METRICS = {
    "test": {"test_acc": "accuracy", "test_auc": "auc", "test_nll": "test_nll"},
    "val": {"test_acc": "val_accuracy", "test_auc": "val_auc", "test_nll": "val_nll"},
}

logger = logging.getLogger("mmkd_evidence")
POLL_SECONDS = 30.0  # how often a process waiting for a run another process holds looks again
#: largest |difference| of any score between teachers trained again and the recorded ones (same configs and seed on
#: the CPU reproduce them; see ``Evidence.restore_teachers``)
REPRODUCE_TOLERANCE = 1e-3


def _key(record: dict) -> tuple:
    return record["dataset"], record["student"], record["method"], record["seed"]


#: extra bundle overrides for every run (``--set``), e.g. a quick check with one epoch
EXTRA: dict = {}


def _configs(dataset: str, student: str | None = None) -> list[str]:
    """The bundle's training configs of ``dataset`` (BreastMNIST layers ``train_breastmnist.json``), then the
    student's own config, if it has one (``fast``: ``student_fast.json``)."""
    files = [str(CONFIGS / "train.json")]
    if dataset == "breastmnist":
        files.append(str(CONFIGS / "train_breastmnist.json"))
    if student in STUDENT_CONFIGS:
        files.append(str(CONFIGS / STUDENT_CONFIGS[student]))
    return files


def _student_override(student: str | None) -> dict[str, str]:
    """The bundle's ``student`` (a key of ``student_capacities``) for a ResNet size; none for a student built by its
    own config (its ``network_def`` replaces the sized ResNet)."""
    return {} if student is None or student in STUDENT_CONFIGS else {"student": student}


def _parser(dataset: str, root: Path, student: str | None = None, **override) -> ConfigParser:
    """The bundle's training config of ``dataset`` for ``student`` (None: the bundle's default), into ``root``."""
    parser = ConfigParser()
    parser.read_config(_configs(dataset, student))
    parser.update({"bundle_root": str(root), "dataset_dir": str(DATA / dataset), **_student_override(student),
                   **override, **EXTRA})
    return parser


def _run(parser: ConfigParser, stage: str) -> tuple[float, int]:
    """Run a bundle stage in-process; return (seconds, iterations of its trainer)."""
    parser.get_parsed_content("initialize")
    start = time.perf_counter()
    parser.get_parsed_content(stage)
    seconds = time.perf_counter() - start
    trainer = {"run_teachers": "teacher_stage#trainer", "run_student_alone": "student_alone#trainer"}.get(stage, "train#trainer")
    return seconds, int(parser.get_parsed_content(trainer).state.iteration)


def _evaluate(dataset: str, root: Path, checkpoint: Path, network: str = "@network_def",
              member: str | list[str] | None = None, student: str | None = None, **override) -> dict[str, float]:
    """Test and validation scores of one checkpoint through the bundle's ``evaluate.json`` (run id
    ``run_checkpoint``, as ``monai-kd evaluate`` runs it), written to ``root/eval/{,val_}metrics.json``.

    Args:
        dataset: the MedMNIST dataset (its configs and data folder).
        root: the run folder the evaluation writes into.
        checkpoint: the file to evaluate (``--eval_checkpoint``).
        network: the config reference of the network it fills (``--eval_network``), e.g. ``@teachers``.
        member: the model of that network's ``ModuleDict`` to score (``--eval_member``), e.g. a teacher's name, or a
            list of names: the uniform mixture of their probabilities (:class:`monai_kd.networks.MeanProbabilities`).
        student: the student the checkpoint holds (its size, or its config layered under ``evaluate.json``).
        override: bundle overrides the network needs (a teacher recipe).

    Returns:
        ``accuracy``, ``auc``, ``test_nll``, ``val_accuracy``, ``val_auc``, ``val_nll`` and ``parameters``.
    """
    configs = [*_configs(dataset, student), str(CONFIGS / "evaluate.json")]
    chosen = {"eval_member": member} if member else {}
    override = {**_student_override(student), **override}
    scores: dict[str, float] = {}
    for split, names in METRICS.items():
        prefix = "" if split == "test" else f"{split}_"
        metrics = evaluate_bundle(configs, root, f"{prefix}metrics.json", run_id="run_checkpoint", meta_file=META,
                                  dataset_dir=str(DATA / dataset), eval_split=split, eval_checkpoint=str(checkpoint),
                                  eval_network=network, **chosen, **{**override, **EXTRA})
        found = metrics[member_name(member, checkpoint)]
        scores.update({name: found[metric] for metric, name in names.items()})
    scores["parameters"] = found["parameters"]
    return scores


INT8_CALIBRATION = 256  # training images that set the int8 activation ranges (as `monai-kd export --int8`)


def int8_scores(dataset: str, student: str, checkpoint: Path, folder: Path, seed: int) -> dict[str, float]:
    """Test scores of one student checkpoint in fp32 and as the int8 model a user deploys
    (:func:`monai_kd.evidence.evaluate.int8_classification_scores`), its activation ranges calibrated on
    ``INT8_CALIBRATION`` training images drawn with ``seed`` through the bundle's ``val_transforms``
    (:func:`monai_kd.quantization.bundle_calibration_images`, what ``monai-kd export --int8`` uses).

    Args:
        dataset: the MedMNIST dataset.
        student: the student the checkpoint holds.
        checkpoint: its ``model.pt``.
        folder: where the ONNX files are written.
        seed: the run's seed (the calibration draw).
    """
    from monai_kd.evidence.evaluate import int8_classification_scores
    from monai_kd.quantization import bundle_calibration_images

    net = load_pretrained(_parser(dataset, folder, student).get_parsed_content("network_def"), checkpoint)
    items = medmnist_datalist(DATA / dataset, "test")
    x = torch.as_tensor(np.stack([i["image"] for i in items])).float()
    y = torch.as_tensor(np.array([i["label"] for i in items])).long().reshape(-1)
    calibration = bundle_calibration_images(_configs(dataset, student), INT8_CALIBRATION, seed,
                                            dataset_dir=str(DATA / dataset), **_student_override(student))
    return int8_classification_scores(net, x, y, calibration, folder)


def select_recipe(candidates: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """The teacher recipe with the lowest mean validation NLL of its teachers, with every candidate's numbers.

    Args:
        candidates: recipe -> teacher name -> that teacher's scores (``_evaluate``), in the grid's order (a tie goes
            to the first).

    Returns:
        the ``selection`` entry: ``rule``, ``mean_val_nll``, ``chosen``, ``recipes`` (their overrides) and
        ``validation`` (validation NLL, AUC and accuracy per recipe and teacher).
    """
    nll = {r: statistics.mean(t["val_nll"] for t in m.values()) for r, m in candidates.items()}
    return {
        "rule": "lowest mean validation NLL of the three teachers", "mean_val_nll": nll, "chosen": min(nll, key=nll.get),
        "recipes": {r: TEACHER_RECIPES[r] for r in candidates},
        "validation": {r: {n: {k: t[k] for k in ("val_nll", "val_auc", "val_accuracy")} for n, t in m.items()}
                       for r, m in candidates.items()},
    }


def _checkpoint(parser: ConfigParser, method: str) -> Path:
    """The checkpoint a student stage saves on completion: its SWA average, BatchNorm recomputed (what was
    validated)."""
    return Path(parser.get_parsed_content("student_alone_ckpt" if method == "student_alone" else "student_ckpt"))


def train_student(dataset: str, student: str, method: str, seed: int, work: Path, teachers: Path, epochs: dict,
                  recipe: dict | None = None) -> dict:
    """Train one student through the bundle and return its record (plus the learned weights for MMKD); ``student``:
    ``small``, ``large`` or ``fast`` (``STUDENT_CONFIGS``); ``recipe``: the teachers' recipe overrides (their
    architecture must match ``teachers``)."""
    root = student_root(work, dataset, seed, student, method)
    override = {**(recipe or {}), "seed": seed, "teachers_ckpt": str(teachers), **epochs}
    override.update(METHOD_OVERRIDES.get(method, {}))
    parser = _parser(dataset, root, student, **override)
    stage = "run_student_alone" if method == "student_alone" else "run_student"
    seconds, iterations = _run(parser, stage)
    ckpt = _checkpoint(parser, method)
    record = {"dataset": dataset, "student": student, "method": method, "seed": seed,
              **_evaluate(dataset, root, ckpt, student=student)}
    record.update(seconds=seconds, seconds_per_iteration=seconds / max(iterations, 1),
                  epochs=parser.get_parsed_content("max_epochs"))
    if method.startswith("mmkd"):
        record["weights"] = _learned_weights(parser, dataset)
    return record


@torch.no_grad()
def _learned_weights(parser: ConfigParser, dataset: str) -> dict:
    """Mean meta-learned KD weight of each teacher on validation images where it is right vs wrong."""
    trainer = parser.get_parsed_content("train#trainer")
    weighting = trainer.loss_function.kd_loss.weighting
    items = medmnist_datalist(DATA / dataset, "val")
    x = torch.as_tensor(np.stack([i["image"] for i in items]))
    y = torch.as_tensor(np.array([i["label"] for i in items]))
    student = trainer.network.eval()  # the final (not averaged) student the meta network was trained with
    outputs, features = trainer.teacher_forward(x)
    with trainer.capture_student() as student_features:
        student_logits = student(x)
    weights = weighting(torch.stack(outputs), features=features, student_logits=student_logits,
                        student_features=student_features)
    names = parser.get_parsed_content("teacher_names")
    summary = {}
    for k, name in enumerate(names):
        right = outputs[k].argmax(1) == y
        summary[name] = {
            "right": float(weights[right, k].mean()) if right.any() else None,
            "wrong": float(weights[~right, k].mean()) if (~right).any() else None,
            "accuracy": float(right.float().mean()),
        }
    return summary


def student_root(work: Path, dataset: str, seed: int, student: str, method: str) -> Path:
    """The run folder of one student run."""
    return work / dataset / f"seed{seed}" / student / method


def teacher_root(work: Path, dataset: str, recipe: str) -> Path:
    """The run folder of one candidate teacher recipe (its three teachers, trained together)."""
    return work / dataset / f"teachers_{recipe}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (e.g. while re-rendering a README two processes share)."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Evidence:
    """This process's share of one evidence run: its records and the run folders it trains.

    The records are one :class:`~monai_kd.evidence.RecordStore` per process, refreshed from the results file before
    any decision on what is left to run and saved after every record, so that processes sharing the file (one per
    CPU core) see each other's records. Each teacher recipe and each student run is trained under the claim of its
    run folder (:func:`~monai_kd.evidence.claim`).

    Args:
        work: the run folders (checkpoints and evaluation outputs), shared by the processes.
        output: the ``results.json``.
        readme: the Markdown file whose ``results`` section is rendered from the records.
        plot_file: the learned-weights plot.
        bench: ``scripts/bench_latency.py``'s JSON (latency beside the fast student's accuracy).
        breast_student_epochs: the students' ``max_epochs`` on BreastMNIST.
    """

    def __init__(self, work: Path, output: Path = RESULTS, readme: Path = README, plot_file: Path = PLOT,
                 bench: Path = BENCH, breast_student_epochs: int = 20) -> None:
        self.work = Path(work)
        self.readme, self.plot_file, self.bench = Path(readme), Path(plot_file), Path(bench)
        self.epochs = {"breastmnist": {"max_epochs": breast_student_epochs}}
        self.store = RecordStore(output, _key, defaults={"selection": {}, "teachers": {}, "teacher_candidates": {},
                                                         "teacher_mixture": {}, "timing": {}})
        self.results = self.store.results
        self.results.setdefault("protocol", {})["description"] = protocol_text(__doc__, "Writes ")

    # sharing -------------------------------------------------------------------------------------------------------
    def _shared(self, jobs: list[tuple[Path, Callable[[], Any]]], wait: bool) -> None:
        """:func:`~monai_kd.evidence.share_runs` of ``jobs`` with this process's records (each job checks them)."""
        share_runs(jobs, wait, refresh=self.store.refresh, poll=POLL_SECONDS)

    # teachers ------------------------------------------------------------------------------------------------------
    def _candidate_scores(self, dataset: str, recipe: str) -> dict[str, dict] | None:
        return self.results["teacher_candidates"].get(f"{dataset}/{recipe}")

    def teacher_candidate(self, dataset: str, recipe: str) -> None:
        """Train (unless trained) and score the three teachers of one candidate recipe; record their scores in
        ``teacher_candidates`` (once: every process chooses from the same numbers). Runs under the recipe's claim.

        The stage is finished when ``run_stage`` wrote its marker: a ``teachers.pt`` alone may be the checkpoint
        MONAI's ``CheckpointSaver`` saves when training is interrupted by an exception, so a folder without the
        marker is trained again from the start.
        """
        if self._candidate_scores(dataset, recipe) is not None:
            return
        self.results["teacher_candidates"][f"{dataset}/{recipe}"] = self._train_teachers(dataset, recipe)
        self.store.save()

    def _train_teachers(self, dataset: str, recipe: str) -> dict[str, dict]:
        """Train (unless finished) the three teachers of one recipe; return each one's scores (``_evaluate``)."""
        root = teacher_root(self.work, dataset, recipe)
        parser = _parser(dataset, root, **TEACHER_RECIPES[recipe])
        trained = run_stage(root, functools.partial(_run, parser, "run_teachers"),
                            name=f"{dataset} teachers, recipe {recipe}", info={"recipe": recipe, **TEACHER_RECIPES[recipe]})
        if trained.ran:
            seconds, iterations = trained.value
            self.results["timing"].setdefault(f"{dataset}/teachers_{recipe}",
                                              {"seconds": seconds, "iterations": iterations})
        ckpt = root / "models" / "teachers.pt"
        return {name: _evaluate(dataset, root, ckpt, "@teachers", name, **TEACHER_RECIPES[recipe])
                for name in parser.get_parsed_content("teacher_names")}

    def restore_teachers(self, dataset: str, recipe: str) -> None:
        """Make the chosen recipe's teachers exist in the work folder: a folder that lost them (run folders are not
        kept in git; a new machine starts without them) trains them again, with the same configs and seed, and checks
        that they are the teachers the records were made with (every validation and test score within
        ``REPRODUCE_TOLERANCE`` of ``teacher_candidates``; each check is kept in ``teacher_restored``). Teachers that
        differ would make the new student runs incomparable with the recorded ones, so the run stops.

        Raises:
            RuntimeError: the retrained teachers score differently from the recorded ones.
        """
        if (teacher_root(self.work, dataset, recipe) / MARKER).is_file():
            return
        recorded = self._candidate_scores(dataset, recipe)
        scores = self._train_teachers(dataset, recipe)
        gap = max(abs(scores[name][metric] - value) for name, teacher in recorded.items()
                  for metric, value in teacher.items() if metric != "parameters")
        self.results.setdefault("teacher_restored", {}).setdefault(f"{dataset}/{recipe}", []).append(
            {"date": time.strftime("%Y-%m-%d %H:%M"), "max_abs_difference": gap})
        self.store.save()
        if gap > REPRODUCE_TOLERANCE:
            raise RuntimeError(
                f"{dataset} teachers of recipe {recipe} trained again score up to {gap:.4g} away from the recorded "
                f"ones (teacher_candidates in {self.store.output}): the recorded student runs used other teachers. "
                "Move the results file aside to start the evidence afresh, or run on the machine that has the old "
                "run folders.")
        logger.info("%s teachers of recipe %s trained again: the recorded scores reproduced (max |difference| %.2g)",
                    dataset, recipe, gap)

    def _candidate_jobs(self, dataset: str, recipes: Sequence[str]) -> list[tuple[Path, Callable[[], None]]]:
        return [(teacher_root(self.work, dataset, r), functools.partial(self.teacher_candidate, dataset, r))
                for r in recipes if self._candidate_scores(dataset, r) is None]

    def teacher_candidates(self, recipes: dict[str, Sequence[str]]) -> None:
        """Every candidate recipe of every dataset that nobody holds (the others are left to their holders)."""
        self.store.refresh()
        self._shared([job for dataset, grid in recipes.items() for job in self._candidate_jobs(dataset, grid)],
                     wait=False)

    def teachers_ready(self, dataset: str, recipes: Sequence[str]) -> bool:
        """Whether every candidate recipe of ``dataset`` is scored (its selection needs no waiting)."""
        return all(self._candidate_scores(dataset, r) is not None for r in recipes)

    def teachers(self, dataset: str, recipes: Sequence[str]) -> tuple[Path, dict]:
        """The dataset's chosen teachers: every candidate recipe trained and scored (here, or by the process that
        holds it: waited for), then the recipe with the lowest mean validation NLL (:func:`select_recipe`), recorded
        as ``selection`` with its teachers' metrics as ``teachers``.

        Returns:
            the chosen recipe's checkpoint and its bundle overrides (the students build their teachers with them).
        """
        self.store.refresh()
        self._shared(self._candidate_jobs(dataset, recipes), wait=True)
        selection = select_recipe({r: self._candidate_scores(dataset, r) for r in recipes})
        chosen = selection["chosen"]
        self.results["selection"][f"{dataset}/teacher_recipe"] = selection
        self.results["teachers"][dataset] = self._candidate_scores(dataset, chosen)
        self.store.save()
        self._shared([(teacher_root(self.work, dataset, chosen), functools.partial(self.chosen_teachers, dataset, chosen))],
                     wait=True)
        return teacher_root(self.work, dataset, chosen) / "models" / "teachers.pt", TEACHER_RECIPES[chosen]

    def chosen_teachers(self, dataset: str, recipe: str) -> None:
        """The chosen recipe's teachers on disk (:meth:`restore_teachers`) and their mixture scored."""
        self.restore_teachers(dataset, recipe)
        self.teacher_mixture(dataset, recipe)

    def teacher_mixture(self, dataset: str, recipe: str) -> None:
        """Score (once) the uniform mixture of the chosen teachers' probabilities, what uniform multi-teacher KD
        distils from, and record it as ``teacher_mixture``: the teacher check asks whether it, too, beats the students.
        """
        names = list(self.results["teachers"][dataset])
        if self.results["teacher_mixture"].get(dataset, {}).get("recipe") == recipe:
            return
        root = teacher_root(self.work, dataset, recipe)
        scores = _evaluate(dataset, root, root / "models" / "teachers.pt", "@teachers", names, **TEACHER_RECIPES[recipe])
        self.results["teacher_mixture"][dataset] = {"recipe": recipe, "members": names, **scores}
        self.store.save()

    # students ------------------------------------------------------------------------------------------------------
    def recorded(self, dataset: str, student: str, method: str, seed: int) -> bool:
        """Whether ``runs`` holds this student run."""
        return self.store.recorded({"dataset": dataset, "student": student, "method": method, "seed": seed})

    def student(self, dataset: str, student: str, method: str, seed: int, teachers: Path, recipe: dict) -> None:
        """Train, score and record one student run, unless it is recorded. Runs under the run's claim.

        A folder of an unrecorded run is an interrupted one (the learned weights and the timing exist only in the
        training process): it is removed and the run trained from the start.
        """
        if self.recorded(dataset, student, method, seed):
            return
        root = student_root(self.work, dataset, seed, student, method)
        if root.exists():
            logger.info("%s: removing the interrupted run", root)
            shutil.rmtree(root)
        record = train_student(dataset, student, method, seed, self.work, teachers, self.epochs.get(dataset, {}), recipe)
        self.store.record(record)
        logger.info("%s %s %s seed %d: test AUC %.3f ACC %.3f (val NLL %.3f) in %.0f s", dataset, student, method, seed,
                    record["auc"], record["accuracy"], record["val_nll"], record["seconds"])
        self.report()

    def students(self, dataset: str, seed: int, students: Sequence[str], methods: Sequence[str], teachers: Path,
                 recipe: dict, wait: bool = False) -> None:
        """The student runs of one dataset and seed not recorded yet; those another process holds are left to it
        (``wait`` False) or waited for (``wait`` True: trained here if their holder dies)."""
        self.store.refresh()
        self._shared([(student_root(self.work, dataset, seed, s, m),
                       functools.partial(self.student, dataset, s, m, seed, teachers, recipe))
                      for s in students for m in methods if not self.recorded(dataset, s, m, seed)], wait)

    def run(self, seeds: Sequence[int], datasets: Sequence[str], recipes: dict[str, Sequence[str]],
            students: Sequence[str], methods: Sequence[str]) -> None:
        """The protocol, in the order that keeps two processes busy.

        1. every candidate teacher recipe nobody holds (the other process takes the rest meanwhile);
        2. seed-major (a partial run has complete comparisons for its first seeds), per dataset (those whose teachers
           are ready first): the teacher choice, waiting for the candidates other processes hold, then the student
           runs nobody holds;
        3. the student runs that were left to other processes: waited for, and trained here if a holder died.
        """
        self.teacher_candidates(recipes)
        chosen: dict[str, tuple[Path, dict]] = {}
        for seed in seeds:
            for dataset in sorted(datasets, key=lambda d: not self.teachers_ready(d, recipes[d])):  # stable
                if dataset not in chosen:
                    chosen[dataset] = self.teachers(dataset, recipes[dataset])
                self.students(dataset, seed, students, methods, *chosen[dataset])
        for seed in seeds:
            for dataset in datasets:
                self.students(dataset, seed, students, methods, *chosen[dataset], wait=True)

    def quantize(self, datasets: Sequence[str], students: Sequence[str], methods: Sequence[str],
                 seeds: Sequence[int]) -> int:
        """Score the int8 model of every recorded student run of the selection whose checkpoint is in the work folder
        and that has no int8 entry yet (``int8`` in ``results.json``, keyed ``dataset/student/method/seed``); trains
        nothing. Returns how many were scored; runs without a checkpoint are listed in the log."""
        self.store.refresh()
        entries = self.results.setdefault("int8", {})
        wanted = {(d, s, m, k) for d in datasets for s in students for m in methods for k in seeds}
        scored = 0
        for r in sorted(self.store.runs, key=_key):
            name = f"{r['dataset']}/{r['student']}/{r['method']}/{r['seed']}"
            if (r["dataset"], r["student"], r["method"], r["seed"]) not in wanted or name in entries:
                continue
            root = student_root(self.work, r["dataset"], r["seed"], r["student"], r["method"])
            ckpt = _checkpoint(_parser(r["dataset"], root, r["student"]), r["method"])
            if not ckpt.is_file():
                logger.warning("%s: no checkpoint %s (run folders are not kept in git); not quantised", name, ckpt)
                continue
            entries[name] = {**int8_scores(r["dataset"], r["student"], ckpt, root / "onnx", r["seed"]),
                             "recorded_auc": r["auc"]}
            scored += 1
            logger.info("%s: int8 test AUC %.4f (fp32 %.4f), agreement %.4f", name, entries[name]["auc"],
                        entries[name]["fp32_auc"], entries[name]["agreement"])
            self.store.save()
        return scored

    # report --------------------------------------------------------------------------------------------------------
    def report(self) -> None:
        """Merge in the other processes' records, derive the teacher check and the timing ratios, save, and re-render
        the README section and the plot (under a lock: the processes sharing the run write the same files)."""
        self.store.refresh()
        self.results["teacher_check"] = teacher_check(self.results)
        self.results["timing_ratio"] = timing(self.results)
        self.store.save()
        bench = json.loads(self.bench.read_text()) if self.bench.is_file() else None
        with _locked(self.readme.with_suffix(".lock")):
            write_section(self.readme, render(self.results, bench))
            plot(self.results, self.plot_file)


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _gain_cell(runs: list[dict], dataset: str, student: str, method: str) -> str:
    """Paired (by seed) test-AUC gain of ``method`` over the student alone, with its 95% CI (``SPECS["mmkd"]``)."""
    if method == "student_alone":
        return "–"
    gain = paired(SPECS["mmkd"], runs, f"{dataset} / {student} student", method, "student_alone", "auc")
    if gain.n == 0:
        return "–"
    if gain.n == 1:
        return f"{gain.differences[0]:+.3f} (1 seed)"
    return f"{gain.interval.mean:+.3f} {ci(gain)}"


def teacher_check(results: dict) -> dict:
    """Per dataset and teacher (and for the uniform mixture of the teachers): better than the best student alone on
    validation accuracy, AUC and NLL?"""
    check = {}
    for dataset, teachers in results.get("teachers", {}).items():
        alone = [r for r in results["runs"] if r["dataset"] == dataset and r["method"] == "student_alone"]
        if not alone:
            continue
        best = {}
        for metric, pick in (("val_accuracy", max), ("val_auc", max), ("val_nll", min)):
            best[metric] = pick(statistics.mean(r[metric] for r in alone if r["student"] == s)
                                for s in {r["student"] for r in alone})
        per_teacher = {
            name: {m: (t[m] < v if m == "val_nll" else t[m] > v) for m, v in best.items()} for name, t in teachers.items()
        }
        check[dataset] = {
            "best_student_alone": best,
            "teacher_better": per_teacher,
            "teachers_better": all(all(v.values()) for v in per_teacher.values()),
        }
        mixture = results.get("teacher_mixture", {}).get(dataset)
        if mixture:  # what uniform KD distils from: the teachers together
            check[dataset]["mixture_better"] = {m: (mixture[m] < v if m == "val_nll" else mixture[m] > v)
                                                for m, v in best.items()}
    return check


def timing(results: dict) -> dict:
    """Seconds per iteration of each MMKD variant relative to the plain (uniform) multi-teacher step."""
    out = {}
    for dataset in DATASETS:
        for student in ALL_STUDENTS:
            runs = [r for r in results["runs"] if r["dataset"] == dataset and r["student"] == student]
            plain = [r["seconds_per_iteration"] for r in runs if r["method"] == "uniform"]
            for method in ("mmkd_logits", "mmkd_logits_features"):
                meta = [r["seconds_per_iteration"] for r in runs if r["method"] == method]
                if plain and meta:
                    out[f"{dataset}/{student}/{method}"] = statistics.mean(meta) / statistics.mean(plain)
    return out


def render(results: dict, bench: dict | None = None) -> str:
    """The README section: results per dataset and student, beside MedMNIST v2's ResNet-18; with fast-student
    records, their accuracy beside the latency ``bench`` (``docs/bench_latency.json``) measured."""
    lines = []
    for dataset in DATASETS:
        runs = [r for r in results["runs"] if r["dataset"] == dataset]
        if not runs:
            continue
        auc18, acc18 = MEDMNIST_RESNET18[dataset]
        t_auc, t_acc = TARGETS[dataset]
        lines += [f"### {dataset} (test split, mean ± sd over seeds)", "",
                  f"MedMNIST v2 ResNet-18 (28): AUC {auc18:.3f}, ACC {acc18:.3f}, {RESNET18_PARAMETERS:,} parameters. "
                  f"Target: a student of <= 1/20 of ResNet-18 with AUC >= {t_auc}, ACC >= {t_acc}.", "",
                  "| student | method | seeds | test AUC | AUC gain over student_alone, 95% CI | test ACC | val NLL | meets target |",
                  "|---|---|---|---|---|---|---|---|"]
        for student in ALL_STUDENTS:
            for method in METHODS:
                sel = [r for r in runs if r["student"] == student and r["method"] == method]
                if not sel:
                    continue
                auc, acc = statistics.mean(r["auc"] for r in sel), statistics.mean(r["accuracy"] for r in sel)
                meets = "yes" if auc >= t_auc and acc >= t_acc and sel[0]["parameters"] * 20 <= RESNET18_PARAMETERS else "no"
                lines.append(f"| {student} ({sel[0]['parameters']:,}) | {method} | {len(sel)} | "
                             f"{_mean_sd([r['auc'] for r in sel])} | {_gain_cell(runs, dataset, student, method)} | "
                             f"{_mean_sd([r['accuracy'] for r in sel])} | "
                             f"{_mean_sd([r['val_nll'] for r in sel])} | {meets} |")
        teachers = results.get("teachers", {}).get(dataset, {})
        chosen = results.get("selection", {}).get(f"{dataset}/teacher_epochs")
        if chosen:
            grid = ", ".join(f"{e}: {v:.3f}" for e, v in chosen["mean_val_nll"].items())
            lines += ["", f"Teachers trained {chosen['chosen']} epochs, chosen by the lowest mean validation NLL of the "
                          f"three teachers (epochs: NLL = {grid})."]
        lines += _recipe_lines(results.get("selection", {}).get(f"{dataset}/teacher_recipe"))
        if teachers:
            lines += ["", "| teacher | parameters | val NLL | val ACC | val AUC | test AUC | test ACC |", "|---|---|---|---|---|---|---|"]
            for name, t in teachers.items():
                lines.append(f"| {name} | {t['parameters']:,} | {t['val_nll']:.3f} | {t['val_accuracy']:.3f} | "
                             f"{t['val_auc']:.3f} | {t['auc']:.3f} | {t['accuracy']:.3f} |")
        check = results.get("teacher_check", {}).get(dataset)
        if check and "best_student_alone" in check:
            best = check["best_student_alone"]
            verdict = "yes" if check["teachers_better"] else "NO"
            worse = [f"{n} ({', '.join(m for m, ok in v.items() if not ok)})" for n, v in check["teacher_better"].items()
                     if not all(v.values())]
            lines += ["", f"Every teacher better than the best student alone on validation (ACC > {best['val_accuracy']:.3f}, "
                          f"AUC > {best['val_auc']:.3f}, NLL < {best['val_nll']:.3f}): **{verdict}**"
                          + (f"; not better on: {'; '.join(worse)}." if worse else ".")]
            mixture = results.get("teacher_mixture", {}).get(dataset)
            if mixture and "mixture_better" in check:
                lacking = [m for m, ok in check["mixture_better"].items() if not ok]
                lines += ["", f"The uniform mixture of the three teachers' probabilities (what uniform KD distils from): "
                              f"val NLL {mixture['val_nll']:.3f}, ACC {mixture['val_accuracy']:.3f}, AUC "
                              f"{mixture['val_auc']:.3f} (test AUC {mixture['auc']:.3f}, ACC {mixture['accuracy']:.3f}); "
                              f"better than the best student alone on validation: "
                              + ("**yes**." if not lacking else f"**NO** (not on {', '.join(lacking)}).")]
        lines += _fast_lines(dataset, runs, teachers, bench)
        lines += _int8_lines(dataset, results.get("int8", {}), bench)
        lines.append("")
    weights = [(r["dataset"], r["student"], r["method"], r["seed"], r["weights"]) for r in results["runs"] if "weights" in r]
    if weights:
        lines += ["### Learned weights against which teacher was right (validation, mean weight)", "",
                  "| dataset | student | method | seed | teacher | its val ACC | weight when right | weight when wrong |",
                  "|---|---|---|---|---|---|---|---|"]
        for dataset, student, method, seed, w in sorted(weights, key=lambda t: t[:4]):
            if seed != 0:
                continue
            for name, v in w.items():
                fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
                lines.append(f"| {dataset} | {student} | {method} | {seed} | {name} | {v['accuracy']:.3f} | "
                             f"{fmt(v['right'])} | {fmt(v['wrong'])} |")
        lines.append("")
    if results.get("timing_ratio"):
        lines += ["### Whole-run time per iteration relative to uniform (evidence runs, shared machine)", "",
                  "Seconds per iteration of each evidence run (`timing_ratio`), MMKD over uniform of the same "
                  "dataset, student and seeds; the runs were made at different times while two evidence processes "
                  "shared the two cores, so these ratios carry the machine's load. The step itself, timed on an idle "
                  "machine with the methods interleaved in one process, is `scripts/bench_mmkd_step.py`'s section "
                  "(\"Bilevel step time\" below).", "",
                  "| dataset / student / method | time per iteration, x uniform |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in sorted(results["timing_ratio"].items())]
    default = _default_run_seconds(results)
    if default:
        lines += ["", f"Default bundle run (PneumoniaMNIST: teachers, student alone and MMKD student, large, seed 0) "
                      f"measured here: {default / 60:.1f} min on the shared 2-core CPU."]
    total = sum(1 for _ in results["runs"])
    lines += ["", f"{total} student runs recorded. Generated by `scripts/mmkd_evidence.py`."]
    return "\n".join(lines)


def _latency(bench: dict | None, model: str, batch: int, runtime: str = "eager") -> str:
    """Median latency (ms, one thread) of ``model`` in ``runtime`` of ``scripts/bench_latency.py``'s ``mmkd``
    records."""
    if not bench:
        return "not measured"
    if bench.get("busy"):
        return "busy run only"  # a README shows no latency measured on a busy machine
    for r in bench.get("records", []):
        if (r["bundle"], r["model"], r["runtime"], r["threads"], r["batch"]) == ("mmkd", model, runtime, 1, batch):
            return f"{1000 * r['median_s']:.2f}"
    return "not measured"


def _fast_lines(dataset: str, runs: list[dict], teachers: dict, bench: dict | None) -> list[str]:
    """The fast student's accuracy beside its latency (issue 20), with the teachers and the large student it is
    compared with; nothing until a fast student is recorded."""
    if not any(r["student"] == FAST for r in runs):
        return []
    lines = ["", f"**Fast student beside its latency** ({dataset}, test split, mean ± sd over seeds; latency: eager, "
                 "one thread, median ms of `docs/bench_latency.json`, generated by `scripts/bench_latency.py` on an idle "
                 "machine; the 20k student is not benchmarked):", "",
             "| model | method | seeds | parameters | test AUC | test ACC | latency b1 (ms) | latency b64 (ms) |",
             "|---|---|---|---:|---|---|---:|---:|"]
    for name, t in teachers.items():
        model = f"teacher_{name}"
        lines.append(f"| {model} | – | 1 | {t['parameters']:,} | {t['auc']:.3f} | {t['accuracy']:.3f} | "
                     f"{_latency(bench, model, 1)} | {_latency(bench, model, 64)} |")
    for student, model in LATENCY_MODELS.items():
        for method in METHODS:
            sel = [r for r in runs if r["student"] == student and r["method"] == method]
            if sel:
                lines.append(f"| {student} student | {method} | {len(sel)} | {sel[0]['parameters']:,} | "
                             f"{_mean_sd([r['auc'] for r in sel])} | {_mean_sd([r['accuracy'] for r in sel])} | "
                             f"{_latency(bench, model, 1)} | {_latency(bench, model, 64)} |")
    return lines


def _int8_lines(dataset: str, entries: dict[str, dict], bench: dict | None) -> list[str]:
    """fp32 against int8 (ONNX Runtime) per student and method: test scores, agreement and the paired int8 - fp32 AUC
    over seeds, beside both models' one-thread ONNX Runtime latency; nothing until an int8 entry of ``dataset``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for name, e in sorted(entries.items()):
        d, student, method, _seed = name.split("/")
        if d == dataset:
            groups.setdefault((student, method), []).append(e)
    if not groups:
        return []
    lines = ["", f"**fp32 and int8 students** ({dataset}, test split, mean ± sd over seeds; int8: the student exported to "
                 "ONNX and quantised by ONNX Runtime, static, calibrated on 256 training images, as `monai-kd export "
                 "--int8`; `scripts/mmkd_evidence.py --int8`; latency: ONNX Runtime, one thread, median ms of "
                 "`docs/bench_latency.json`):", "",
             "| student | method | seeds | fp32 AUC | int8 AUC | int8 - fp32 AUC, 95% CI | fp32 ACC | int8 ACC | "
             "agreement | fp32 b1 / b64 (ms) | int8 b1 / b64 (ms) |",
             "|---|---|---|---|---|---|---|---|---|---:|---:|"]
    order = {s: i for i, s in enumerate(ALL_STUDENTS)}
    for (student, method), sel in sorted(groups.items(), key=lambda g: (order.get(g[0][0], 9), METHODS.index(g[0][1]))):
        diff = [e["auc"] - e["fp32_auc"] for e in sel]
        gap = f"{diff[0]:+.4f} (1 seed)" if len(diff) == 1 else f"{statistics.mean(diff):+.4f} {ci(t_interval(diff), 4)}"
        model = LATENCY_MODELS.get(student)

        def lat(runtime: str) -> str:
            return f"{_latency(bench, model, 1, runtime)} / {_latency(bench, model, 64, runtime)}" if model else "not measured"

        lines.append(f"| {student} | {method} | {len(sel)} | {_mean_sd([e['fp32_auc'] for e in sel])} | "
                     f"{_mean_sd([e['auc'] for e in sel])} | {gap} | "
                     f"{_mean_sd([e['fp32_accuracy'] for e in sel])} | {_mean_sd([e['accuracy'] for e in sel])} | "
                     f"{_mean_sd([e['agreement'] for e in sel])} | {lat('onnxruntime')} | {lat('onnxruntime_int8')} |")
    return lines


def _recipe_lines(selection: dict | None) -> list[str]:
    """The teacher recipe search of one dataset: every candidate's validation NLL / AUC / ACC per teacher."""
    if not selection:
        return []
    lines = ["", f"Teacher recipe chosen by the lowest mean validation NLL of the three teachers: **{selection['chosen']}**.",
             "", "| recipe | overrides | mean val NLL | " + " | ".join(
                 f"{n} val NLL / AUC / ACC" for n in next(iter(selection["validation"].values()))) + " |",
             "|---|---|---|" + "---|" * len(next(iter(selection["validation"].values())))]
    for recipe, teachers in selection["validation"].items():
        overrides = ", ".join(f"`{k.split('#', 1)[-1]}={json.dumps(v)}`" for k, v in selection["recipes"][recipe].items())
        cells = " | ".join(f"{t['val_nll']:.3f} / {t['val_auc']:.3f} / {t['val_accuracy']:.3f}" for t in teachers.values())
        lines.append(f"| {recipe} | {overrides} | {selection['mean_val_nll'][recipe]:.3f} | {cells} |")
    return lines


def _default_run_seconds(results: dict) -> float | None:
    """Seconds of the three stages of the default bundle run, from the PneumoniaMNIST records."""
    recipe = results.get("selection", {}).get("pneumoniamnist/teacher_recipe", {}).get("chosen")
    teachers = results.get("timing", {}).get(f"pneumoniamnist/teachers_{recipe}" if recipe else "pneumoniamnist/teachers_e10")
    stages = [r["seconds"] for r in results["runs"] if r["dataset"] == "pneumoniamnist" and r["student"] == "large"
              and r["seed"] == 0 and r["method"] in ("student_alone", "mmkd_logits_features")]
    return teachers["seconds"] + sum(stages) if teachers and len(stages) == 2 else None


def plot(results: dict, path: Path | None = None) -> None:
    """Bar plot (``path``, default ``PLOT``): mean learned weight of each teacher when it was right vs wrong (seed 0
    MMKD runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in results["runs"] if "weights" in r and r["seed"] == 0]
    if not sel:
        return
    rows = sorted({r["dataset"] for r in sel})  # one row per dataset, one column per student and method
    cols = sorted({(r["student"], r["method"]) for r in sel}, key=lambda c: (ALL_STUDENTS.index(c[0]) if c[0] in ALL_STUDENTS else 9, c[1]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.3 * len(cols), 2.6 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for r in sel:
        ax = axes[rows.index(r["dataset"])][cols.index((r["student"], r["method"]))]
        ax.set_visible(True)
        names = list(r["weights"])
        right = [r["weights"][n]["right"] or 0.0 for n in names]
        wrong = [r["weights"][n]["wrong"] or 0.0 for n in names]
        xs = np.arange(len(names))
        ax.bar(xs - 0.2, right, 0.4, label="teacher right")
        ax.bar(xs + 0.2, wrong, 0.4, label="teacher wrong")
        ax.set_xticks(xs, names, fontsize=7)
        ax.set_title(f"{r['dataset'][:-5]} {r['student']}\n{r['method']}", fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="y", labelsize=6)
    for row in axes:
        row[0].set_ylabel("mean KD weight (val)", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path or PLOT, dpi=120)
    plt.close(fig)


def stale_records(results: dict, datasets: list[str]) -> str | None:
    """Why ``results`` cannot be resumed, or ``None``: student records whose teachers predate the recipe search.

    Records made before ``TEACHER_RECIPE_GRID`` existed carry a ``<dataset>/teacher_epochs`` selection and no
    ``<dataset>/teacher_recipe``: their students learned from the legacy teachers, and resuming would skip them and
    mix them with students of the new teachers in one table.
    """
    selection = results.get("selection", {})
    legacy = [d for d in datasets if any(r["dataset"] == d for r in results.get("runs", []))
              and f"{d}/teacher_recipe" not in selection]
    if not legacy:
        return None
    return (f"{RESULTS} holds student records of {', '.join(legacy)} made with the legacy teachers (no teacher recipe "
            f"selection): move it aside (e.g. to results_legacy_teachers.json) and run again to start afresh.")


def main(argv: list[str] | None = None) -> None:
    ap = evidence_parser(__doc__, report_only="re-render tables and plot from results.json")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=ALL_STUDENTS,
                    help=f"default {' '.join(STUDENTS)}; {FAST}: the bundle's FastStudent (configs/student_fast.json)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--work", type=Path, default=WORK,
                    help="run folders: checkpoints and evaluation outputs (never in git); processes running the same "
                         "command on the same folder share the runs")
    ap.add_argument("--breast-student-epochs", type=int, default=20)
    ap.add_argument("--teachers-only", action="store_true", help="train and select the teachers, no students")
    ap.add_argument("--teacher-recipes", nargs="+", default=None, choices=sorted(TEACHER_RECIPES),
                    help="candidate teacher recipes (default: TEACHER_RECIPE_GRID of each dataset)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="bundle overrides for every run")
    ap.add_argument("--out", type=Path, default=None, help="write results.json, README section and plot here instead")
    ap.add_argument("--int8", action="store_true",
                    help="train nothing: quantise the recorded students (of --datasets/--students/--methods/--seeds) "
                         "whose checkpoints are in --work to int8 and score them (`int8` in results.json)")
    ap.add_argument("--bench", type=Path, default=BENCH, help="scripts/bench_latency.py's JSON (fast-student latency)")
    args = ap.parse_args(argv)
    EXTRA.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    if args.out is not None:
        global RESULTS, README, PLOT
        args.out.mkdir(parents=True, exist_ok=True)
        RESULTS, README, PLOT = args.out / "results.json", args.out / "README.md", args.out / "mmkd_weights.png"
        if not README.is_file():
            README.write_text("<!-- results:begin -->\n<!-- results:end -->\n")
    setup_logging()
    torch.set_num_threads(1)
    evidence = Evidence(args.work, RESULTS, README, PLOT, args.bench, args.breast_student_epochs)
    if args.int8:
        evidence.quantize(args.datasets, args.students, args.methods, args.seeds)
    elif not args.report_only:
        stale = stale_records(evidence.results, args.datasets)
        if stale:
            raise SystemExit(stale)
        recipes = {d: list(args.teacher_recipes or TEACHER_RECIPE_GRID[d]) for d in args.datasets}
        evidence.run(args.seeds, args.datasets, recipes, [] if args.teachers_only else args.students, args.methods)
    evidence.report()


if __name__ == "__main__":
    main()
