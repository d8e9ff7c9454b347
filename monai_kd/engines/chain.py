# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Chained distillation (WeCKD, Rahman et al. 2025): ``M_1 -> M_2 -> ... -> M_n``, one small labelled fraction per link.

- :func:`chain_partition` / :func:`chain_datalists`: a seeded, documented partition of the training split into
  one labelled subset per link (disjoint unless ``overlap`` is set; by group, e.g. patient, when groups are given).
- :class:`DistillationChain`: trains the links in order with the existing engines — link 1 with MONAI's
  ``SupervisedTrainer`` on its labels (or :class:`~monai_kd.engines.DistillationTrainer` from ``first_teacher``),
  every later link with :class:`~monai_kd.engines.DistillationTrainer` from the frozen previous link — checkpoints
  each link atomically, records its validation metrics, and resumes a broken chain at the first missing link.

A chain of one link is a single backbone and a chain of two is one-step KD, so the fair baselines of the WeCKD
evidence run through the same class with other datasets.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler, StatsHandler, ValidationHandler, from_engine
from monai.utils import optional_import, set_determinism
from torch import nn

from monai_kd.engines.distillation_trainer import DistillationTrainer
from monai_kd.handlers.finite_guard import NonFiniteGuard
from monai_kd.handlers.training_checkpoint import TrainingCheckpoint
from monai_kd.handlers.weight_averaging import WeightAveraging
from monai_kd.io.atomic import atomic_paths
from monai_kd.networks.pretrained import load_pretrained
from monai_kd.networks.wrappers import unwrap_module

if TYPE_CHECKING:
    from ignite.handlers import ProgressBar
else:
    ProgressBar, _ = optional_import("ignite.handlers", name="ProgressBar")

__all__ = ["DistillationChain", "chain_datalists", "chain_partition", "merge_datalists"]

logger = logging.getLogger("monai_kd.chain")

NetworkSpec = Union[nn.Module, Callable[[], nn.Module]]


# --------------------------------------------------------------------------- partition of the labels


def _link_sizes(count: int, fractions: Sequence[float]) -> list[int]:
    """``max(1, round(f * count))`` units for every link."""
    return [max(1, int(round(f * count))) for f in fractions]


def _draw(units: np.ndarray, fractions: Sequence[float], overlap: float, rng: np.random.Generator, what: str) -> list[list]:
    """Give each link its units: the first ``round(overlap * size)`` from the previous link, the rest fresh."""
    order = units[rng.permutation(len(units))]
    cursor, links = 0, []
    for i, size in enumerate(_link_sizes(len(units), fractions)):
        shared = list(links[-1][: int(round(overlap * size))]) if links else []
        fresh = size - len(shared)
        if cursor + fresh > len(order):
            raise ValueError(
                f"link fractions {list(fractions)} with overlap {overlap} need more {what} than the {len(order)}"
                f" available (link {i + 1} runs out): lower the fractions or the chain length, or raise the overlap."
            )
        links.append(shared + order[cursor : cursor + fresh].tolist())
        cursor += fresh
    return links


def chain_partition(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float],
    overlap: float = 0.0,
    groups: Sequence[Hashable] | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Split a training set into one labelled subset per chain link.

    Without ``groups`` every item is its own unit and the draw is class-stratified: for each class with ``n_c``
    items, link ``i`` gets ``max(1, round(fractions[i] * n_c))`` of them. With ``groups`` (e.g. the patient of every
    slice) whole groups are drawn at random (not stratified), link ``i`` getting ``max(1, round(fractions[i] * G))``
    of the ``G`` groups, so no group is split between links. The units are shuffled once with
    ``numpy.random.default_rng(seed)``; links take fresh units in order, except that link ``i > 1`` first takes
    ``round(overlap * size_i)`` units of link ``i - 1`` (the first ones it drew). With ``overlap = 0`` the subsets
    are disjoint.

    Args:
        labels: class index of every item of the training split.
        fractions: labelled fraction of every link, each in (0, 1]; the chain length is ``len(fractions)``.
        overlap: fraction of each link's units shared with the previous link, in [0, 1).
        groups: group (patient) of every item; ``None`` treats items as independent.
        seed: seed of the shuffle.

    Returns:
        One sorted index array per link.

    Raises:
        ValueError: bad fractions, overlap or groups, or more units needed than the split holds.
    """
    labels = np.asarray(labels).reshape(-1)
    if len(fractions) < 1 or any(not 0.0 < float(f) <= 1.0 for f in fractions):
        raise ValueError(f"fractions must be one or more numbers in (0, 1], got {list(fractions)}.")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    if len(labels) == 0:
        raise ValueError("cannot partition an empty training split.")
    rng = np.random.default_rng(seed)
    links: list[list[int]] = [[] for _ in fractions]
    if groups is None:
        for cls in np.unique(labels):
            for link, members in zip(links, _draw(np.flatnonzero(labels == cls), fractions, overlap, rng, f"items of class {cls}")):
                link.extend(members)
    else:
        groups = np.asarray(groups, dtype=object).reshape(-1)
        if len(groups) != len(labels):
            raise ValueError(f"got {len(groups)} groups for {len(labels)} labels.")
        names = sorted(set(groups.tolist()), key=str)
        index = {name: k for k, name in enumerate(names)}
        group_ids = np.array([index[g] for g in groups.tolist()])
        for link, members in zip(links, _draw(np.arange(len(names)), fractions, overlap, rng, "groups (patients)")):
            link.extend(np.flatnonzero(np.isin(group_ids, members)).tolist())
    return [np.array(sorted(link), dtype=np.int64) for link in links]


def chain_datalists(
    datalist: Sequence[Mapping],
    fractions: Sequence[float],
    overlap: float = 0.0,
    group_key: str | None = None,
    seed: int = 0,
    label_key: str = "label",
) -> list[list[Mapping]]:
    """:func:`chain_partition` of a datalist: the items of every link.

    Args:
        datalist: training items, each with ``label_key`` (and ``group_key`` when given).
        fractions: labelled fraction of every link.
        overlap: fraction of each link shared with the previous one.
        group_key: item key of the group (e.g. ``"subject"`` for BraTS slices); ``None`` for independent items.
        seed: seed of the partition.
        label_key: item key of the class index.
    """
    labels = [int(item[label_key]) for item in datalist]
    groups = [item[group_key] for item in datalist] if group_key else None
    return [[datalist[i] for i in idx] for idx in chain_partition(labels, fractions, overlap, groups, seed)]


def merge_datalists(datalists: Sequence[Sequence[Mapping]]) -> list[Mapping]:
    """Concatenate datalists, keeping an item (the same object) once, e.g. the union of overlapping links."""
    seen: set[int] = set()
    merged = []
    for datalist in datalists:
        for item in datalist:
            if id(item) not in seen:
                seen.add(id(item))
                merged.append(item)
    return merged


# --------------------------------------------------------------------------- fingerprints for resuming


def _item_id(item: Any) -> Any:
    """A stable identity of a datalist item: its ``index``/``subject``/``slice``/``image`` path, else its bytes."""
    if isinstance(item, Mapping):
        keys = [k for k in ("index", "subject", "slice") if k in item]
        if keys:
            return [item[k] if isinstance(item[k], (str, int)) else int(item[k]) for k in keys]
        if isinstance(item.get("image"), str):
            return item["image"]
        image = item.get("image")
        if image is not None:
            return hashlib.sha1(np.ascontiguousarray(np.asarray(image)).tobytes()).hexdigest()
    return repr(item)


def _scalars(module: nn.Module) -> dict[str, Any]:
    """Scalar hyper-parameters of a module and its children (temperatures, weights), for fingerprints."""
    found = {}
    for name, sub in module.named_modules():
        for key, value in vars(sub).items():
            if not key.startswith("_") and isinstance(value, (int, float, str, bool)) and key != "training":
                found[f"{name}.{key}" if name else key] = value
    return found


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the chain


class DistillationChain:
    """Train a distillation chain ``M_1 -> ... -> M_n``; link ``i`` learns from its own labels and the frozen ``M_{i-1}``.

    For every link the runner builds a fresh network (and a second copy holding the weight average), a loader over
    the link's dataset, an optimizer and a scheduler, and trains with the existing engines:

    - link 1: ``monai.engines.SupervisedTrainer`` with ``task_loss`` on its labels, or a
      :class:`~monai_kd.engines.DistillationTrainer` from ``first_teacher`` when one is given;
    - link ``i > 1``: :class:`~monai_kd.engines.DistillationTrainer` with the previous link's averaged network,
      reloaded from its checkpoint, as the frozen teacher and that link's ``loss_function`` (e.g.
      :class:`~monai_kd.losses.DistillationLoss` with logit and optional feature terms).

    Each link trains for ``max(max_epochs, ceil(min_iterations / batches_per_epoch))`` epochs (small fractions still
    get enough optimizer steps), with the weights averaged over the last ``1 - swa_start_fraction`` of the epochs
    (:class:`~monai_kd.handlers.WeightAveraging`, SWA; no checkpoint picking). The averaged network is validated
    with ``evaluator`` (its ``network`` is swapped to the link's), saved atomically as ``ckpt_dir/{name}_{i}.pt``
    (a plain state dict), and its record (sizes, epochs, seconds, final validation metrics, fingerprint) is added
    to ``ckpt_dir/{name}.json``. The last link is also saved as ``ckpt_dir/{final_filename}``.

    Resuming: :meth:`run` reuses link ``i`` when its checkpoint exists and its record carries the same fingerprint
    (its data items, architecture, loss hyper-parameters, epochs and the previous link's fingerprint); it retrains
    from the first link that fails this test, and every link after it (their teacher changed). A checkpoint with a
    record of another configuration raises an error unless ``overwrite=True``. Within a link, a
    :class:`~monai_kd.handlers.TrainingCheckpoint` saves every epoch (``ckpt_dir/resume/``), so a killed link continues
    from its last completed epoch; a :class:`~monai_kd.handlers.NonFiniteGuard` stops a link that goes NaN.

    Args:
        device: device of networks and batches.
        max_epochs: minimum number of epochs of every link.
        networks: the architecture of every link: one network (copied per link) or a zero-argument callable
            returning a fresh network (a bundle's ``"_mode_": "callable"`` definition), or one of these per link.
        datasets: one training dataset per link (its labelled fraction with the training transforms); the chain
            length is ``len(datasets)``.
        optimizer: callable ``optimizer(parameters) -> torch.optim.Optimizer``, e.g. a partial of ``AdamW``.
        loss_function: loss of the distilled links (called as in ``DistillationTrainer``): one for every
            distilled link, or a sequence with one per distilled link (links 2..n, or 1..n with ``first_teacher``).
            A shared loss must not hold parameters (feature connectors); give one per link then.
        ckpt_dir: folder of the link checkpoints and records.
        task_loss: loss of an undistilled link 1; default ``torch.nn.CrossEntropyLoss()``.
        first_teacher: optional frozen teacher of link 1.
        evaluator: optional ``SupervisedEvaluator`` on the validation data; run during training every
            ``val_interval`` epochs and once on each finished link (its metrics go into the record).
        lr_scheduler: optional callable ``lr_scheduler(optimizer, epochs)`` returning a scheduler stepped each epoch.
        batch_size: training batch size.
        num_workers: loader workers.
        min_iterations: minimum number of optimizer steps per link (raises the epochs of small fractions).
        swa_start_fraction: weights of the epochs after this fraction of training are averaged, in [0, 1).
        val_interval: epochs between validations; default about 5 validations per link.
        inferer: inferer of the trainers (``SimpleInferer`` by default).
        name: file stem of the checkpoints and the record (``link`` gives ``link_1.pt`` ... and ``link.json``).
        final_filename: extra copy of the last link's checkpoint (``None`` for none).
        progress: show an ignite progress bar per link.
        distributed: wrap each link's network in ``DistributedDataParallel`` and shard the data with a
            ``DistributedSampler`` (process group initialised by the caller); only rank 0 writes files.
        overwrite: retrain links whose checkpoints belong to another configuration instead of raising.
        seed: when given, ``monai.utils.set_determinism(seed + link)`` runs before each link's loader and networks
            are built, so the links a resumed chain trains are the ones an uninterrupted run would have trained.
        trainer_kwargs: any other ``SupervisedTrainer`` argument for every link (``amp``, ``prepare_batch``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        networks: NetworkSpec | Sequence[NetworkSpec],
        datasets: Sequence[Any],
        optimizer: Callable[[Any], torch.optim.Optimizer],
        loss_function: nn.Module | Sequence[nn.Module],
        ckpt_dir: str | os.PathLike,
        task_loss: nn.Module | None = None,
        first_teacher: nn.Module | None = None,
        evaluator: Any | None = None,
        lr_scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        min_iterations: int = 0,
        swa_start_fraction: float = 0.5,
        val_interval: int | None = None,
        inferer: Any | None = None,
        name: str = "link",
        final_filename: str | None = "model.pt",
        progress: bool = True,
        distributed: bool = False,
        overwrite: bool = False,
        seed: int | None = None,
        trainer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.datasets = list(datasets)
        n = len(self.datasets)
        if n < 1:
            raise ValueError("DistillationChain needs at least one link (one dataset per link).")
        if any(len(ds) == 0 for ds in self.datasets):
            empty = [i + 1 for i, ds in enumerate(self.datasets) if len(ds) == 0]
            raise ValueError(f"the datasets of links {empty} are empty.")
        if isinstance(networks, nn.Module) or callable(networks) and not isinstance(networks, Sequence):
            networks = [networks] * n
        self.networks = list(networks)
        if len(self.networks) != n:
            raise ValueError(f"got {len(self.networks)} networks for {n} links; give one, or one per link.")
        distilled = n if first_teacher is not None else n - 1
        if isinstance(loss_function, nn.Module):
            if distilled > 1 and any(p.requires_grad for p in loss_function.parameters()):
                raise ValueError("a loss with parameters cannot be shared by several links; give one loss per link.")
            loss_function = [loss_function] * distilled
        self.losses = list(loss_function)
        if len(self.losses) != distilled:
            raise ValueError(
                f"got {len(self.losses)} losses for {distilled} distilled links; give one, or one per distilled link."
            )
        if not 0.0 <= swa_start_fraction < 1.0:
            raise ValueError(f"swa_start_fraction must be in [0, 1), got {swa_start_fraction}.")
        self.device = torch.device(device)
        self.max_epochs = int(max_epochs)
        self.optimizer = optimizer
        self.ckpt_dir = Path(ckpt_dir)
        self.task_loss = task_loss if task_loss is not None else nn.CrossEntropyLoss()
        self.first_teacher = first_teacher
        self.evaluator = evaluator
        self.lr_scheduler = lr_scheduler
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.min_iterations = int(min_iterations)
        self.swa_start_fraction = float(swa_start_fraction)
        self.val_interval = val_interval
        self.inferer = inferer
        self.name = name
        self.final_filename = final_filename
        self.progress = progress
        self.distributed = distributed
        self.overwrite = overwrite
        self.seed = seed
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.records: list[dict] = []
        self._fingerprints: dict[int, str] = {}

    # ------------------------------------------------------------------ files

    def __len__(self) -> int:
        return len(self.datasets)

    def checkpoint(self, link: int) -> Path:
        """Checkpoint file of ``link`` (1-based)."""
        return self.ckpt_dir / f"{self.name}_{link}.pt"

    @property
    def record_file(self) -> Path:
        """JSON file with one record per finished link."""
        return self.ckpt_dir / f"{self.name}.json"

    def network(self, link: int) -> nn.Module:
        """A fresh (untrained) network of ``link`` (1-based) on the chain's device."""
        spec = self.networks[link - 1]
        net = copy.deepcopy(spec) if isinstance(spec, nn.Module) else spec()
        return net.to(self.device)

    def load_link(self, link: int) -> nn.Module:
        """The trained network of ``link`` (1-based), loaded from its checkpoint, in eval mode."""
        return load_pretrained(self.network(link), self.checkpoint(link), map_location=str(self.device)).eval()

    def _read_records(self) -> dict[int, dict]:
        if not self.record_file.is_file():
            return {}
        return {int(r["link"]): r for r in json.loads(self.record_file.read_text()).get("links", [])}

    def _is_main(self) -> bool:
        return not self.distributed or torch.distributed.get_rank() == 0

    def _write(self, link: int, state: dict, record: dict) -> None:
        """Save the link's checkpoint, then its record (a crash in between leaves the link to retrain)."""
        if self._is_main():
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            targets = [self.checkpoint(link)]
            if link == len(self) and self.final_filename:
                targets.append(self.ckpt_dir / self.final_filename)
            with atomic_paths(*targets) as tmps:
                for tmp in tmps:
                    torch.save(state, tmp)
            records = {k: v for k, v in self._read_records().items() if k < link}
            records[link] = record
            with atomic_paths(self.record_file) as (tmp,):
                Path(tmp).write_text(json.dumps({"links": [records[k] for k in sorted(records)]}, indent=2) + "\n")
        if self.distributed:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ training

    def _fingerprint(self, link: int, epochs: int, previous: str) -> str:
        data = getattr(self.datasets[link - 1], "data", None)
        items = [_item_id(x) for x in data] if data is not None else len(self.datasets[link - 1])
        net = self.network(link)
        arch = [type(net).__name__, [[k, list(v.shape)] for k, v in net.state_dict().items()]]
        loss = self._loss(link)
        return _fingerprint(items, arch, type(loss).__name__, _scalars(loss), epochs, self.swa_start_fraction, previous)

    def _loss(self, link: int) -> nn.Module:
        distilled = link > 1 or self.first_teacher is not None
        return self.losses[link - 1 - (self.first_teacher is None)] if distilled else self.task_loss

    def _loader(self, link: int) -> DataLoader:
        dataset = self.datasets[link - 1]
        sampler = None
        if self.distributed:
            from monai.data import DistributedSampler

            sampler = DistributedSampler(dataset, shuffle=True)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=self.num_workers
        )

    def _epochs(self, loader: DataLoader) -> int:
        return max(self.max_epochs, math.ceil(self.min_iterations / max(1, len(loader))))

    def resume_file(self, link: int, fingerprint: str) -> Path:
        """Per-epoch training checkpoint of an unfinished ``link`` (named by its fingerprint: another configuration
        never resumes it); deleted once the link is saved."""
        return self.ckpt_dir / "resume" / f"{self.name}_{link}-{fingerprint}.pt"

    def _train_link(self, link: int, teacher: nn.Module | None, loader: DataLoader, epochs: int) -> tuple[dict, dict]:
        """Train one link (resuming its last completed epoch); return the averaged network's state and its record."""
        network, averaged = self.network(link), self.network(link)
        trained = network
        if self.distributed:
            ids = [self.device] if self.device.type == "cuda" else None
            trained = torch.nn.parallel.DistributedDataParallel(network, device_ids=ids)
        loss = self._loss(link)
        optimizer = self.optimizer([*trained.parameters(), *loss.parameters()])  # connectors of feature terms too
        handlers: list[Any] = [
            WeightAveraging(network, averaged, mode="swa", start_epoch=int(epochs * self.swa_start_fraction) + 1)
        ]
        if self.lr_scheduler is not None:
            handlers.append(LrScheduleHandler(self.lr_scheduler(optimizer, epochs), print_lr=False))
        if self.evaluator is not None:
            interval = self.val_interval or max(1, epochs // 5)
            handlers.append(ValidationHandler(validator=self.evaluator, interval=interval, epoch_level=True))
        tag = f"{self.name}_{link}"
        handlers.append(
            StatsHandler(name=tag, tag_name=f"{tag}_loss", output_transform=from_engine(["loss"], first=True), iteration_log=False)
        )
        if self.progress and self._is_main():
            handlers.append(ProgressBar(persist=True, desc=f"{self.name} {link}/{len(self)}"))
        resume_file = self.resume_file(link, self._fingerprints.get(link, ""))
        handlers += [NonFiniteGuard(stage=tag, checkpoint=resume_file), TrainingCheckpoint(resume_file, stage=tag)]
        common = {
            "device": self.device,
            "max_epochs": epochs,
            "train_data_loader": loader,
            "network": trained,
            "optimizer": optimizer,
            "loss_function": loss,
            "train_handlers": handlers,
            **({"inferer": self.inferer} if self.inferer is not None else {}),
            **self.trainer_kwargs,
        }
        if teacher is None:
            trainer = SupervisedTrainer(**common)
        else:
            trainer = DistillationTrainer(teachers=teacher, **common)
        if self.evaluator is not None:
            self.evaluator.network = averaged
            self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = -1, -1  # per link
        start = time.perf_counter()
        trainer.run()
        seconds = time.perf_counter() - start
        metrics = {}
        if self.evaluator is not None:
            self.evaluator.run()
            metrics = {f"val_{k}" if not k.startswith("val") else k: float(v) for k, v in self.evaluator.state.metrics.items()}
        record = {
            "link": link,
            "teacher": None if teacher is None else ("first_teacher" if link == 1 else f"{self.name}_{link - 1}"),
            "train_items": len(self.datasets[link - 1]),
            "epochs": epochs,
            "iterations": trainer.state.iteration,
            "seconds": round(seconds, 1),
            **metrics,
        }
        return unwrap_module(averaged).state_dict(), record

    def run(self) -> list[dict]:
        """Train the missing links in order (resuming a broken chain) and return one record per link."""
        records = self._read_records()
        teacher, retrain = self.first_teacher, False
        previous = "" if teacher is None else _fingerprint({k: v.sum().item() for k, v in teacher.state_dict().items()})
        self.records = []
        for link in range(1, len(self) + 1):
            if self.seed is not None:
                set_determinism(seed=self.seed + link)
            loader = self._loader(link)
            epochs = self._epochs(loader)
            fingerprint = self._fingerprint(link, epochs, previous)
            old = records.get(link)
            done = not retrain and self.checkpoint(link).is_file() and old is not None
            if done and old.get("fingerprint") != fingerprint:
                if not self.overwrite:
                    raise ValueError(
                        f"{self.checkpoint(link)} was trained with another configuration (data, architecture, loss or"
                        f" epochs); use another ckpt_dir, delete the chain's files, or pass overwrite=True."
                    )
                done = False
            if done:
                logger.info("%s %d/%d: reusing %s", self.name, link, len(self), self.checkpoint(link))
                record = old
            else:
                retrain = True  # every later link learns from a new teacher
                logger.info("%s %d/%d: training on %d items for %d epochs", self.name, link, len(self), len(loader.dataset), epochs)
                self._fingerprints[link] = fingerprint  # names the link's per-epoch checkpoint
                state, record = self._train_link(link, teacher, loader, epochs)
                record["fingerprint"] = fingerprint
                self._write(link, state, record)
                if self._is_main():
                    done_file = self.resume_file(link, fingerprint)
                    done_file.unlink(missing_ok=True)
                    try:
                        done_file.parent.rmdir()  # only when empty: nothing left to resume
                    except OSError:
                        pass
            self.records.append(record)
            previous = fingerprint
            teacher = self.load_link(link) if link < len(self) else None
        return self.records

    @torch.no_grad()
    def evaluate(
        self, evaluator: Any, filepath: str | os.PathLike | None = None, predictions_file: str | os.PathLike | None = None
    ) -> dict[str, dict]:
        """Run ``evaluator`` (e.g. on the test split) on every trained link; optionally merge into a JSON file.

        Args:
            evaluator: a ``SupervisedEvaluator``; its ``network`` is swapped to each link in turn.
            filepath: JSON file that receives one entry per link (``link_1``, ...), other entries kept.
            predictions_file: JSON file that receives each link's per-sample predictions
                (:class:`~monai_kd.handlers.PredictionWriter`, for the model card's intervals).

        Returns:
            ``{"<name>_<i>": metrics}`` with the parameter count of each link.
        """
        results = {}
        from monai_kd.handlers.prediction_writer import PredictionWriter

        for link in range(1, len(self) + 1):
            evaluator.network = self.load_link(link)
            writer = None
            if predictions_file is not None and self._is_main():
                writer = PredictionWriter(predictions_file, f"{self.name}_{link}")
                writer.attach(evaluator)
            try:
                evaluator.run()
            finally:
                if writer is not None:
                    writer.detach(evaluator)
            results[f"{self.name}_{link}"] = {
                **{k: float(v) for k, v in evaluator.state.metrics.items()},
                "parameters": sum(p.numel() for p in evaluator.network.parameters()),
            }
        if filepath is not None and self._is_main():
            path = Path(filepath)
            content = json.loads(path.read_text()) if path.is_file() else {}
            content.update(results)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_paths(path) as (tmp,):
                Path(tmp).write_text(json.dumps(content, indent=2) + "\n")
        return results
