#!/usr/bin/env python
"""Training speed of one distillation job in plain PyTorch, torchdistill and monai_kd (live and cached teachers).

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
the cache), and ``torchdistill`` when its Python is given and importable (else recorded with the reason).
Per variant: seconds of every epoch; the result is the median of epochs 2..N (epoch 1 is warm-up / cache fill and is
reported on its own), and each median as a ratio to ``student_alone``'s median of the same run.

A busy machine gives no honest timing: the 1-minute load average is read before and after each variant; above
``--max-load`` the run is refused (exit 3) unless ``--allow-busy``, and then the JSON flags it and the Markdown
section states that the run was busy and shows no numbers as results.

Writes ``--output`` (default ``scripts/_work/bench_kd_speed.json``) and the ``kd-speed`` section of
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
from monai_kd.reporting import busy_refusal, busy_section, write_timing_section  # noqa: E402
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data"))
OUT_JSON = REPO / "scripts" / "_work" / "bench_kd_speed.json"
OUT_MD = REPO / "docs" / "bench_kd_speed.md"
SECTION = "kd-speed"
RERUN = "OMP_NUM_THREADS=1 python scripts/bench_kd_speed.py --torchdistill-python .venv-torchdistill/bin/python"
VARIANTS = ("student_alone", "pytorch_kd", "monai_kd_live", "monai_kd_cached", "torchdistill")
JOBS: dict[str, dict[str, Any]] = {
    "cls": {"bundle": "kd", "teacher": "teacher_def", "student": "network_def", "batch": 128, "T": 4.0, "w": 0.9,
            "data": "PneumoniaMNIST train, 28 px"},
    "seg": {"bundle": "kdml_seg", "teacher": "teacher_def", "student": "network_def", "batch": 32, "T": 4.0, "w": 0.5,
            "data": "BraTS FLAIR train slices, 64 px, tumour mask"},
}


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


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


def run_plain(job: str, items: list[dict], epochs: int, seed: int, with_teacher: bool) -> list[float]:
    """Plain PyTorch loop; seconds per epoch."""
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


def run_torchdistill(python: str | None) -> tuple[list[float], dict]:
    """torchdistill in its own environment, when it imports there; otherwise the reason it was not run."""
    if not python:
        return [], {"skipped": "no --torchdistill-python given"}
    probe = subprocess.run([python, "-c", "import torchdistill.core.distillation, torchdistill; print(torchdistill.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return [], {"skipped": f"torchdistill does not import in {python}: {last}"}
    return [], {"skipped": f"torchdistill {probe.stdout.strip()} imports, but its runner is not written yet"}


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
                times, extra = run_torchdistill(args.torchdistill_python)
            load_after = load_average()
            later = times[1:] or times
            record["variants"][variant] = {
                "epoch_s": times, "first_epoch_s": times[0] if times else None,
                "median_epoch_s": statistics.median(later) if later else None,
                "load_before": load_before, "load_after": load_after,
                "busy": max(load_before, load_after) > args.max_load, **extra,
            }
            shown = f"{record['variants'][variant]['median_epoch_s']:.2f} s/epoch" if later else extra.get("skipped", "")
            print(f"{job:>4} {variant:>16}: {shown} (load {load_before:.1f} -> {load_after:.1f})", flush=True)
        base = record["variants"].get("student_alone", {}).get("median_epoch_s")
        for v in record["variants"].values():
            v["ratio_to_student_alone"] = v["median_epoch_s"] / base if base and v["median_epoch_s"] else None
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
            lines.append(f"| {name} | {v['median_epoch_s']:.2f} | {v['ratio_to_student_alone']:.2f} | "
                         f"{v['first_epoch_s']:.2f} | {note} |")
        lines.append("")
    return "\n".join(lines)


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
    parser.add_argument("--torchdistill-python", default=None, help="python of an environment with torchdistill")
    parser.add_argument("--output", type=Path, default=OUT_JSON)
    parser.add_argument("--markdown", type=Path, default=OUT_MD)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (epoch 1 is warm-up / cache fill)")
    load_before = load_average()
    refusal = busy_refusal(load_before, args.max_load, args.allow_busy)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    result = bench(args)
    load_after = load_average()
    busy = max([load_before, load_after] + [v["load_after"] for j in result["jobs"] for v in j["variants"].values()])
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads, "epochs": args.epochs,
        "limit": args.limit, "seed": args.seed, "load_before": load_before, "load_after": load_after,
        "max_load": args.max_load, "busy": busy > args.max_load, "command": " ".join(sys.argv), **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    if not write_timing_section(args.markdown, markdown(result), SECTION, result["busy"], "| variant |"):
        print(f"busy run: {args.markdown} keeps its measured table; this run is only in {args.output}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
