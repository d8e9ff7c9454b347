#!/usr/bin/env python
"""Training speed of one distillation job in plain PyTorch, torchdistill and monai_kd (live and cached teachers).

    bash scripts/bench_venv.sh     # once: .venv-torchdistill/ (torch 2.14.1 + torchvision 0.29.1 + torchdistill)
    OMP_NUM_THREADS=1 python scripts/bench_kd_speed.py [--jobs cls seg] [--epochs 5] [--limit N] [--threads 1]
        [--max-load 1.0] [--allow-busy] [--torchdistill-python .venv-torchdistill/bin/python]

Each job is the same work for every variant: the same teacher and student (built from the bundle's own configs,
seeded random weights: speed does not depend on the weight values), the same in-memory real data, batch size,
shuffling, loss (``(1 - w) * task + w * T^2 * KL(student_T || teacher_T)``) and optimizer (AdamW), no augmentation
(so the cache is exact and every variant sees the same images):

- ``cls``: the ``kd`` bundle's ResNet-18 teacher (stride 2) and ~60k-parameter student on PneumoniaMNIST train
  (28 px), batch 128, T=4, w=0.9;
- ``seg``: the ``kdml_seg`` bundle's UNet teacher and student on the BraTS FLAIR slices (64 px, tumour mask),
  batch 32, pixel-wise cross-entropy + pixel-wise KD, T=4, w=0.5.

Variants, run one after another in this process: ``student_alone`` (plain PyTorch loop, no teacher),
``pytorch_kd`` (plain PyTorch loop, teacher live), ``monai_kd_live`` (:class:`monai_kd.engines.DistillationTrainer`,
no handlers), ``monai_kd_cached`` (the same with :class:`monai_kd.engines.TeacherCacheStep`: the first epoch fills
the cache); and, in the torchdistill environment (a subprocess of this script, ``--worker``, because torchdistill
needs a torchvision that does not load beside the project's torch), ``torchdistill`` (1.1.5, the newest release,
``DistillationBox`` with its ``KDLoss``) and ``torchdistill_cache_output`` (1.1.4, the last release that honours the
``cache_output`` data-loader key: per-sample teacher-output files written in epoch 1, read afterwards). Both
torchdistill arms set ``cache_output`` and record how many cache files were written (1.1.5 writes none: the key is
ignored). Each worker measures ``student_alone`` and ``pytorch_kd`` again in its own process, so a torchdistill arm's
ratio is to the student-alone epoch of the same process and torch build, and its first-batch loss is checked
against the plain loop's (same weights, batches and loss). Without the environment they are recorded as skipped,
with the reason.
Per variant: seconds of every epoch; the result is the median of epochs 2..N (epoch 1 is warm-up / cache fill and is
reported on its own), and each median as a ratio to ``student_alone``'s median of the same run.

A busy machine gives no honest timing: the 1-minute load average is read before and after each variant; above
``--max-load`` the run is refused (exit 3) unless ``--allow-busy``, and then the JSON flags it and the Markdown
section states that the run was busy and shows no numbers as results.

Writes ``--output`` (default ``docs/bench_kd_speed.json``) and the ``kd-speed`` section of
``docs/bench_kd_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from monai_kd.reporting import busy_refusal, busy_section, is_busy, load_average, run_header, save_timing_run  # noqa: E402
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data"))
OUT_JSON = REPO / "docs" / "bench_kd_speed.json"
OUT_MD = REPO / "docs" / "bench_kd_speed.md"
SECTION = "kd-speed"
TORCHDISTILL_PYTHON = REPO / ".venv-torchdistill" / "bin" / "python"  # made by scripts/bench_venv.sh
RERUN = "bash scripts/bench_venv.sh && OMP_NUM_THREADS=1 python scripts/bench_kd_speed.py"
VARIANTS = ("student_alone", "pytorch_kd", "monai_kd_live", "monai_kd_cached", "torchdistill",
            "torchdistill_cache_output")
TORCHDISTILL_VARIANTS = ("torchdistill", "torchdistill_cache_output")
JOBS: dict[str, dict[str, Any]] = {
    "cls": {"bundle": "kd", "teacher": "teacher_def", "student": "network_def", "batch": 128, "T": 4.0, "w": 0.9,
            "data": "PneumoniaMNIST train, 28 px"},
    "seg": {"bundle": "kdml_seg", "teacher": "teacher_def", "student": "network_def", "batch": 32, "T": 4.0, "w": 0.5,
            "data": "BraTS FLAIR train slices, 64 px, tumour mask"},
}


def job_data(job: str, limit: int | None) -> list[dict]:
    """The job's training items ``{"image", "label", "index"}`` in memory (real data, no augmentation)."""
    import torch

    if job == "cls":
        from monai_kd.data import medmnist_datalist

        items = medmnist_datalist(DATA / "pneumoniamnist", "train", num_classes=2)
        out = [{"image": torch.as_tensor(i["image"]), "label": int(i["label"]), "index": int(i["index"])} for i in items]
    else:
        from monai_kd.data import brats_slice_datalist

        items = brats_slice_datalist(DATA / "brats2015-sample", "train", "flair", [64, 64])
        out = [{"image": torch.as_tensor(i["image"]), "label": torch.as_tensor(i["mask"][0]).long(), "index": k}
               for k, i in enumerate(items)]
    return out[:limit] if limit else out


def networks(job: str, seed: int) -> tuple[Any, Any]:
    """Teacher (eval, frozen) and a freshly seeded student from the bundle's configs."""
    import torch
    from monai.bundle import ConfigParser

    spec = JOBS[job]
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / spec["bundle"] / "configs" / "train.json"))
    parser["device"] = "$torch.device('cpu')"
    torch.manual_seed(seed)
    teacher = parser.get_parsed_content(spec["teacher"], instantiate=True).eval().requires_grad_(False)
    torch.manual_seed(seed + 1)
    student = parser.get_parsed_content(spec["student"], instantiate=True)
    return teacher, student


def loader(items: list[dict], batch: int, seed: int) -> Any:
    import torch

    return torch.utils.data.DataLoader(items, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))


def kd_term(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """Plain PyTorch KD: ``T^2 * KL(teacher_T || student_T)`` over the class axis (dim 1), mean over rows / pixels."""
    import torch.nn.functional as F

    log_p = F.log_softmax(student_logits / temperature, dim=1)
    q = F.softmax(teacher_logits / temperature, dim=1)
    kl = (q * (q.clamp_min(1e-12).log() - log_p)).sum(dim=1)
    return kl.mean() * temperature**2


def run_plain(job: str, items: list[dict], epochs: int, seed: int, with_teacher: bool,
              losses: list | None = None) -> list[float]:
    """Plain PyTorch loop; seconds per epoch (every batch's loss appended to ``losses`` if given)."""
    import torch
    import torch.nn.functional as F

    spec = JOBS[job]
    teacher, student = networks(job, seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    data = loader(items, spec["batch"], seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        student.train()
        for batch in data:
            x, y = batch["image"], batch["label"]
            optimizer.zero_grad()
            logits = student(x)
            if with_teacher:
                with torch.no_grad():
                    t = teacher(x)
                loss = (1 - spec["w"]) * F.cross_entropy(logits, y) + spec["w"] * kd_term(logits, t, spec["T"])
            else:
                loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            if losses is not None:
                losses.append(loss.item())
        times.append(time.perf_counter() - start)
    return times


def run_monai_kd(job: str, items: list[dict], epochs: int, seed: int, cached: bool) -> tuple[list[float], dict]:
    """The same job through monai_kd's ``DistillationTrainer`` (optionally with the teacher cache)."""
    import torch
    from ignite.engine import Events

    from monai_kd.engines import DistillationTrainer, TeacherCacheStep
    from monai_kd.losses import DistillationLoss, MultiTeacherKDLoss

    spec = JOBS[job]
    teacher, student = networks(job, seed)
    loss = DistillationLoss(task_loss=torch.nn.CrossEntropyLoss(), kd_loss=MultiTeacherKDLoss(temperature=spec["T"]),
                            task_weight=1 - spec["w"], kd_weight=spec["w"])
    step = TeacherCacheStep() if cached else None
    trainer = DistillationTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=loader(items, spec["batch"], seed), network=student,
        optimizer=torch.optim.AdamW(student.parameters(), lr=1e-3), loss_function=loss, teachers=[teacher], step=step,
    )
    times: list[float] = []
    marks: dict[str, float] = {}
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: marks.__setitem__("start", time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: times.append(time.perf_counter() - marks["start"]))
    trainer.run()
    extra = {"cache_hits": step.hits, "cache_misses": step.misses} if step is not None else {}
    return times, extra


class _PairDataset:
    """``(image, label)`` pairs of the job's items: the form torchdistill's dataset wrappers expect."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.items[index]["image"], self.items[index]["label"]


def run_torchdistill_box(job: str, items: list[dict], epochs: int, seed: int, cache_dir: str | None,
                         losses: list | None = None) -> list[float]:
    """The job through torchdistill's ``DistillationBox`` (runs in the torchdistill environment); seconds per epoch.

    The loss is torchdistill's ``KDLoss`` (``alpha * CE + beta * T^2 * KL``, ``reduction="batchmean"``) with
    ``alpha = 1 - w`` and ``beta = w / (pixels per image)``, which is exactly the plain loop's loss (its KL is a
    mean over rows and pixels, ``batchmean`` divides the sum by the batch size only); the same seeded weights and
    shuffling, so the first batches' losses equal the plain loop's (``losses``). ``cache_dir`` sets the train data
    loader's ``cache_output`` key (torchdistill <= 1.1.4 writes each sample's teacher output there in epoch 1 and
    reads it back afterwards; 1.1.5 no longer reads the key, so nothing is written).
    """
    import torch
    from torchdistill.core.distillation import get_distillation_box

    spec = JOBS[job]
    teacher, student = networks(job, seed)
    pixels = int(items[0]["label"].numel()) if torch.is_tensor(items[0]["label"]) else 1
    # one generator for the sampler and the loader, as ``loader()``'s ``shuffle=True`` does: the loader draws its
    # base seed from it before the sampler's permutation, so the batches are the plain loop's batches
    generator = torch.Generator().manual_seed(seed)
    loader_config: dict[str, Any] = {
        "dataset_id": "train", "requires_supp": True,
        "sampler": {"class_or_func": torch.utils.data.RandomSampler, "kwargs": {"generator": generator}},
        "kwargs": {"batch_size": spec["batch"], "num_workers": 0, "generator": generator},
    }
    if cache_dir is not None:
        loader_config["cache_output"] = cache_dir
    kd = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
          "teacher_module_io": "output", "temperature": spec["T"], "alpha": 1 - spec["w"],
          "beta": spec["w"] / pixels, "reduction": "batchmean"}
    train_config = {
        "num_epochs": epochs, "train_data_loader": loader_config,
        "teacher": {"requires_grad": False, "forward_proc": "forward_batch_only"},
        "student": {"requires_grad": True, "forward_proc": "forward_batch_only"},
        "optimizer": {"key": "AdamW", "kwargs": {"lr": 1e-3}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {
            "kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}}},
    }
    box = get_distillation_box(teacher, student, {"train": _PairDataset(items)}, train_config,
                               torch.device("cpu"), None, False, 1)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch, targets, supp_dict)
            if losses is not None:
                losses.append(loss.item())
            box.post_forward_process(loss)
        box.post_epoch_process()
        times.append(time.perf_counter() - start)
    return times


def worker(args: argparse.Namespace) -> dict:
    """``--worker``: run in the torchdistill environment; student-alone, plain KD and one torchdistill arm -> JSON.

    The student-alone and plain-KD epochs are measured again here, so that the torchdistill arm's ratio is to the
    student-alone epoch of the same process and the same torch build.
    """
    import tempfile

    import torch
    import torchdistill

    torch.set_num_threads(args.threads)
    job = args.jobs[0]
    items = job_data(job, args.limit)
    out: dict[str, Any] = {"torch": torch.__version__, "torchdistill": torchdistill.__version__,
                           "python": platform.python_version(), "epoch_s": {}}
    out["epoch_s"]["student_alone"] = run_plain(job, items, args.epochs, args.seed, with_teacher=False)
    plain_losses: list[float] = []
    out["epoch_s"]["pytorch_kd"] = run_plain(job, items, args.epochs, args.seed, True, plain_losses)
    arm = "torchdistill" if args.worker == "torchdistill" else "torchdistill_cache_output"
    td_losses: list[float] = []
    # both arms set ``cache_output``: the files it leaves show whether this torchdistill reads the key at all
    with tempfile.TemporaryDirectory(prefix="td-cache-") as cache:
        out["epoch_s"][arm] = run_torchdistill_box(job, items, args.epochs, args.seed, cache, td_losses)
        out["cache_files"] = sum(len(files) for _, _, files in os.walk(cache))
    # same seeded weights, shuffling and loss: the first batch's loss must agree (later ones drift by float order)
    out["first_loss"] = {"pytorch_kd": plain_losses[0], arm: td_losses[0]}
    return out


def torchdistill_env(python: str, variant: str) -> dict[str, str]:
    """Environment of a torchdistill worker: the checkout's code first; the ``cache_output`` arm also gets
    torchdistill 1.1.4 from ``<venv>/torchdistill-1.1.4`` (installed there by ``scripts/bench_venv.sh``)."""
    paths = [str(REPO)]
    if variant == "torchdistill_cache_output":
        paths.insert(0, str(Path(python).parent.parent / "torchdistill-1.1.4"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_torchdistill(python: str | None, variant: str, args: argparse.Namespace, job: str) -> tuple[list[float], dict]:
    """A torchdistill arm in its own environment (subprocess ``--worker``); or the reason it was not run."""
    if not python:
        return [], {"skipped": "no torchdistill environment: run `bash scripts/bench_venv.sh` or give --torchdistill-python"}
    env = torchdistill_env(python, variant)
    probe = subprocess.run([python, "-c", "import torchdistill.core.distillation, torchdistill; print(torchdistill.__version__)"],
                           capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return [], {"skipped": f"torchdistill does not import in {python}: {last}"}
    cmd = [python, str(Path(__file__).resolve()), "--worker", "torchdistill" if variant == "torchdistill" else "cache_output",
           "--jobs", job, "--epochs", str(args.epochs), "--seed", str(args.seed), "--threads", str(args.threads)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["unknown error"])[-1]
        return [], {"skipped": f"torchdistill {probe.stdout.strip()} failed: {last}"}
    result = json.loads(run.stdout.strip().splitlines()[-1])
    base = result["epoch_s"]["student_alone"]
    base_median = statistics.median(base[1:] or base)
    plain = result["epoch_s"]["pytorch_kd"]
    extra = {"environment": {k: result[k] for k in ("python", "torch", "torchdistill")},
             "same_env_student_alone_median_s": base_median, "same_env_epoch_s": result["epoch_s"],
             "same_env_pytorch_kd_ratio": statistics.median(plain[1:] or plain) / base_median}
    extra["cache_files"] = result["cache_files"]
    extra["first_loss"] = result["first_loss"]
    plain, td = result["first_loss"]["pytorch_kd"], result["first_loss"][variant]
    extra["first_loss_rel_diff"] = abs(td - plain) / max(abs(plain), 1e-12)
    return result["epoch_s"][variant], extra


def bench(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    jobs = []
    for job in args.jobs:
        items = job_data(job, args.limit)
        record: dict[str, Any] = {"job": job, **JOBS[job], "samples": len(items), "epochs": args.epochs, "variants": {}}
        teacher, student = networks(job, args.seed)
        record["teacher_parameters"] = sum(p.numel() for p in teacher.parameters())
        record["student_parameters"] = sum(p.numel() for p in student.parameters())
        for variant in args.variants:
            load_before = load_average()
            extra: dict = {}
            if variant in ("student_alone", "pytorch_kd"):
                times = run_plain(job, items, args.epochs, args.seed, with_teacher=variant == "pytorch_kd")
            elif variant.startswith("monai_kd"):
                times, extra = run_monai_kd(job, items, args.epochs, args.seed, cached=variant == "monai_kd_cached")
            else:
                times, extra = run_torchdistill(args.torchdistill_python, variant, args, job)
            load_after = load_average()
            later = times[1:] or times
            record["variants"][variant] = {
                "epoch_s": times, "first_epoch_s": times[0] if times else None,
                "median_epoch_s": statistics.median(later) if later else None,
                "load_before": load_before, "load_after": load_after,
                # both readings hold the run's own threads (earlier variants keep the 1-minute load up): only load
                # beyond them is another job's; the load before the whole run is checked in main()
                "busy": is_busy(0.0, [load_before, load_after], args.max_load, args.threads), **extra,
            }
            shown = f"{record['variants'][variant]['median_epoch_s']:.2f} s/epoch" if later else extra.get("skipped", "")
            print(f"{job:>4} {variant:>16}: {shown} (load {load_before:.1f} -> {load_after:.1f})", flush=True)
        base = record["variants"].get("student_alone", {}).get("median_epoch_s")
        for v in record["variants"].values():
            # a torchdistill arm is a ratio to the student-alone epoch of its own process and torch build
            v_base = v.get("same_env_student_alone_median_s", base)
            v["ratio_to_student_alone"] = v["median_epoch_s"] / v_base if v_base and v["median_epoch_s"] else None
        jobs.append(record)
    return {"jobs": jobs}


def markdown(result: dict) -> str:
    """The generated section: a table per job, or, for a busy run, what was run and why it is not a result."""
    head = (f"Machine: {result['machine']}; torch threads {result['threads']}; {result['epochs']} epochs per variant, "
            f"median of epochs 2..{result['epochs']} (epoch 1 = warm-up and cache fill, shown apart); "
            f"load average {result['load_before']:.2f} before, {result['load_after']:.2f} after; run {result['date']}.")
    if result["busy"]:
        return busy_section(head, result["max_load"], RERUN)
    lines = [head, ""]
    for job in result["jobs"]:
        lines += [f"### {job['job']}: {job['data']} ({job['samples']} samples, batch {job['batch']}); teacher "
                  f"{job['teacher_parameters']:,} / student {job['student_parameters']:,} parameters", "",
                  "| variant | s / epoch (median) | x student-alone | epoch 1 (s) | note |", "|---|---:|---:|---:|---|"]
        for name, v in job["variants"].items():
            if v["median_epoch_s"] is None:
                lines.append(f"| {name} | – | – | – | {v.get('skipped', '')} |")
                continue
            note = f"cache hits {v['cache_hits']}, misses {v['cache_misses']}" if "cache_hits" in v else ""
            if "environment" in v:
                env = v["environment"]
                note = (f"torchdistill {env['torchdistill']}, torch {env['torch']} (own venv); ratio to student-alone "
                        f"{v['same_env_student_alone_median_s']:.2f} s measured there (plain KD there: "
                        f"{v['same_env_pytorch_kd_ratio']:.2f}x)")
                note += (f"; `cache_output` set: {v['cache_files']} cache files written; first-batch loss "
                         f"{v['first_loss_rel_diff']:.0e} from plain KD's (relative)")
            lines.append(f"| {name} | {v['median_epoch_s']:.2f} | {v['ratio_to_student_alone']:.2f} | "
                         f"{v['first_epoch_s']:.2f} | {note} |")
        lines += ["", *targets(job), ""]
    return "\n".join(lines)


#: issue 15's targets: (variant, reference variant, largest allowed excess of its median epoch over the reference's)
TARGETS = (("monai_kd_live", "pytorch_kd", 0.05), ("monai_kd_cached", "student_alone", 0.10))


def targets(job: dict) -> list[str]:
    """One line per target of :data:`TARGETS`: the measured excess over the reference epoch and whether it is met."""
    out = []
    for name, ref, allowed in TARGETS:
        v, r = job["variants"].get(name, {}), job["variants"].get(ref, {})
        if v.get("median_epoch_s") is None or r.get("median_epoch_s") is None:
            continue
        excess = v["median_epoch_s"] / r["median_epoch_s"] - 1
        verdict = "met" if round(excess, 4) <= allowed else "not met"  # as shown (one decimal of a percent)
        out.append(f"- `{name}` vs `{ref}`: {excess:+.1%} per epoch (target at most +{allowed:.0%}: {verdict}).")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training samples (smoke runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--allow-busy", action="store_true", help="measure anyway; the result is flagged busy")
    parser.add_argument("--torchdistill-python", default=str(TORCHDISTILL_PYTHON) if TORCHDISTILL_PYTHON.is_file() else None,
                        help="python of the environment made by scripts/bench_venv.sh (default: "
                             ".venv-torchdistill/bin/python when it exists)")
    parser.add_argument("--worker", choices=["torchdistill", "cache_output"], default=None,
                        help=argparse.SUPPRESS)  # internal: the torchdistill arms, run inside that environment
    parser.add_argument("--output", type=Path, default=OUT_JSON)
    parser.add_argument("--markdown", type=Path, default=OUT_MD)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (epoch 1 is warm-up / cache fill)")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    load_before = load_average()
    refusal = busy_refusal(load_before, args.max_load, args.allow_busy)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    result = bench(args)
    load_after = load_average()
    variant_loads = [v["load_after"] for j in result["jobs"] for v in j["variants"].values()]
    result = run_header(
        threads=args.threads, epochs=args.epochs, limit=args.limit, seed=args.seed, load_before=load_before,
        load_after=load_after, max_load=args.max_load,
        busy=is_busy(load_before, [load_after, *variant_loads], args.max_load, args.threads), **result,
    )
    save_timing_run(result, args.output, args.markdown, markdown(result), SECTION, "| variant |")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
