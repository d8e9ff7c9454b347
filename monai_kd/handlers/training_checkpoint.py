# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Resume a training stage after a crash: an atomic checkpoint of everything the stage needs, at every epoch end.

:class:`TrainingCheckpoint` is an Ignite handler for any MONAI trainer (``SupervisedTrainer`` or a
:class:`~monai_kd.engines.DistillationEngine`). It finds the stage's state on its own, from the engine and the
handlers attached to it:

==========================  ============================================================================
what                        where from
==========================  ============================================================================
epoch, iteration            ``engine.state``
network, optimizer          ``engine.network``, ``engine.optimizer`` (and ``engine.scaler`` with AMP)
loss                        ``engine.loss_function`` when it holds parameters or buffers (learned teacher
                            weighting gates, feature connectors, meta-weight networks)
step state                  modules, optimizers and schedulers held by ``engine.step`` (MMKD's meta optimizer)
LR schedule                 every attached handler with an ``lr_scheduler`` (``LrScheduleHandler``)
weight averaging            every attached :class:`~monai_kd.handlers.WeightAveraging` (averaged copy + count)
best validation metric      the validator of every attached ``ValidationHandler``
random states               torch (CPU and CUDA), NumPy, Python, and every random transform of the training data
==========================  ============================================================================

It writes them at ``EPOCH_COMPLETED`` (after validation, scheduling and averaging, since it is attached last)
with :func:`monai_kd.io.atomic.atomic_paths`, so a kill at any moment leaves either the previous checkpoint or the
new one under the real name, never a partial file. At ``STARTED`` it loads the checkpoint (``weights_only=True``)
and the engine continues with the next epoch; an interrupted epoch is redone from its start, with the random
states it had, so on CPU the resumed run gives the weights of an uninterrupted one. A checkpoint of a finished
stage makes the engine stop at once (the stage is skipped) with the trained state restored.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import optional_import
from torch import nn

from monai_kd.handlers.weight_averaging import WeightAveraging
from monai_kd.io.atomic import TEMP_PREFIX, atomic_paths
from monai_kd.networks.pretrained import CheckpointError, load_checkpoint

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
    from ignite.handlers.checkpoint import BaseSaveHandler
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")
    BaseSaveHandler, _ = optional_import("ignite.handlers.checkpoint", name="BaseSaveHandler", as_type="base")

__all__ = ["AtomicSaveHandler", "ResumeError", "TrainingCheckpoint", "attached_handlers", "final_files"]

logger = logging.getLogger("monai_kd.resume")

FORMAT = "monai_kd.training_checkpoint/1"


class ResumeError(CheckpointError):
    """A training checkpoint cannot be resumed (unreadable, or written by another configuration)."""


class AtomicSaveHandler(BaseSaveHandler):
    """An Ignite save handler that writes ``dirname/filename`` atomically (temporary file, fsync, rename).

    MONAI's ``CheckpointSaver`` writes in place (a kill mid-save leaves a partial file under the real name);
    :class:`TrainingCheckpoint` puts this handler in its place for the final checkpoint.

    Args:
        dirname: folder of the checkpoint.
        filename: fixed file name (``CheckpointSaver``'s ``final_filename``); ``None`` keeps Ignite's name.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        target = self.dirname / (self.filename or filename)
        with atomic_paths(target) as (tmp,):
            torch.save(checkpoint, tmp)

    def remove(self, filename: str) -> None:
        if self.filename is not None:  # a fixed name is replaced atomically by the next save; never delete it first
            return
        path = self.dirname / filename
        if path.exists():
            path.unlink()


def attached_handlers(engine: Engine) -> list[Any]:
    """The handler objects attached to ``engine`` (bound methods and event filters unwrapped), each once."""
    found: dict[int, Any] = {}
    for handlers in engine._event_handlers.values():
        for entry in handlers:
            func = entry[0]
            parent = getattr(func, "_parent", None)
            if parent is not None:  # ignite wraps filtered handlers (every=N) and keeps a weak reference
                func = parent() or func
            owner = getattr(func, "__self__", func)
            found.setdefault(id(owner), owner)
    return list(found.values())


def _randomizables(obj: Any) -> list[Any]:
    """Every object with a NumPy ``RandomState`` ``R`` (MONAI ``Randomizable``) in a dataset's transform tree, once."""
    found: dict[int, Any] = {}  # id -> the node if it has a random state, else None (visited)

    def visit(node: Any, depth: int) -> None:
        if node is None or depth > 12 or id(node) in found or isinstance(node, (torch.Tensor, np.ndarray, nn.Module)):
            return
        if isinstance(node, (list, tuple)):
            for child in node:
                if hasattr(child, "__dict__"):  # transforms and datasets, not the datalist's dict items
                    visit(child, depth + 1)
            return
        if not hasattr(node, "__dict__") or isinstance(node, type):
            return
        found[id(node)] = None
        if isinstance(getattr(node, "R", None), np.random.RandomState):
            found[id(node)] = node
        for key, child in vars(node).items():  # as monai.data.utils.set_rnd walks them
            if not key.startswith("__"):
                visit(child, depth + 1)

    visit(obj, 0)
    return [node for node in found.values() if node is not None]


def _np_state(state: tuple) -> dict:
    return {"keys": torch.from_numpy(np.asarray(state[1], dtype=np.int64)), "pos": int(state[2]),
            "has_gauss": int(state[3]), "cached_gaussian": float(state[4])}


def _np_restore(state: dict) -> tuple:
    return ("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached_gaussian"])


def _stateful(obj: Any) -> bool:
    return isinstance(obj, nn.Module) and any(True for _ in obj.state_dict())


class TrainingCheckpoint:
    """Save the whole training state atomically at every epoch end; resume from it when the engine starts.

    Args:
        path: the checkpoint file (its folder is created).
        stage: the stage's name in messages (e.g. ``teacher``); default the file's stem.
        resume: load ``path`` at ``STARTED`` when it exists. ``False`` trains the stage from scratch and deletes an
            older checkpoint at once (so a crash of the fresh run never resumes the old one).
        save_interval: save every this many epochs.

    Raises:
        ResumeError: at ``STARTED``, the checkpoint is unreadable or does not fit the stage (another architecture,
            other ``max_epochs`` or another number of iterations per epoch): the message says to pass
            ``--resume false`` or use a fresh ``bundle_root``.
    """

    def __init__(
        self, path: str | os.PathLike, stage: str | None = None, resume: bool = True, save_interval: int = 1
    ) -> None:
        self.path = Path(path)
        self.stage = stage or self.path.stem
        self.resume = bool(resume)
        self.save_interval = max(1, int(save_interval))
        self.resumed_from: int | None = None  # epoch loaded at STARTED (None: started fresh)
        self.skipped = False

    def attach(self, engine: Engine) -> None:
        """Load at ``STARTED`` and save at ``EPOCH_COMPLETED``; attach it after the stage's other handlers."""
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine._monai_kd_training_checkpoint = self  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ what is saved

    def _objects(self, engine: Engine) -> dict[str, Any]:
        """``{name: object with state_dict/load_state_dict}`` for the stage."""
        objects: dict[str, Any] = {"network": engine.network}
        if getattr(engine, "optimizer", None) is not None:
            objects["optimizer"] = engine.optimizer
        if getattr(engine, "scaler", None) is not None:
            objects["scaler"] = engine.scaler
        loss = getattr(engine, "loss_function", None)
        if _stateful(loss):
            objects["loss_function"] = loss
        step = getattr(engine, "step", None)
        seen: set[int] = {id(o) for o in objects.values()}
        while step is not None:
            for key, value in sorted(vars(step).items()):
                values = value if isinstance(value, (list, tuple)) else [value]
                for k, v in enumerate(values):
                    stateful = _stateful(v) or isinstance(v, torch.optim.Optimizer) or isinstance(
                        v, torch.optim.lr_scheduler.LRScheduler
                    )
                    if stateful and id(v) not in seen:
                        seen.add(id(v))
                        objects[f"step.{key}" + (f".{k}" if isinstance(value, (list, tuple)) else "")] = v
            step = getattr(step, "step", None)  # a wrapping step (teacher cache) holds the method's step
        for k, handler in enumerate(attached_handlers(engine)):
            scheduler = getattr(handler, "lr_scheduler", None)
            if scheduler is not None and hasattr(scheduler, "state_dict"):
                objects[f"lr_scheduler.{k}"] = scheduler
            if isinstance(handler, WeightAveraging):
                objects[f"averaged.{k}"] = handler.averaged
            validator = getattr(handler, "validator", None)
            if validator is not None and hasattr(validator, "state"):
                objects.setdefault(f"validator.{k}", validator)
        return objects

    def _state(self, engine: Engine, finished: bool) -> dict:
        states: dict[str, Any] = {}
        counters: dict[str, Any] = {}
        for name, obj in self._objects(engine).items():
            if name.startswith("validator."):
                counters[name] = {
                    "best_metric": float(getattr(obj.state, "best_metric", -1)),
                    "best_metric_epoch": int(getattr(obj.state, "best_metric_epoch", -1)),
                }
            else:
                states[name] = obj.state_dict()
        for k, handler in enumerate(attached_handlers(engine)):
            if isinstance(handler, WeightAveraging):
                counters[f"averaged.{k}"] = {"num_averaged": int(handler.num_averaged)}
        loader = getattr(engine, "data_loader", None)
        transforms = [_np_state(t.R.get_state()) for t in _randomizables(getattr(loader, "dataset", None))]
        rng = {
            "torch": torch.get_rng_state(),
            "numpy": _np_state(np.random.get_state()),
            "python": random.getstate(),
            "transforms": transforms,
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": FORMAT,
            "stage": self.stage,
            "finished": finished,
            "epoch": int(engine.state.epoch),
            "iteration": int(engine.state.iteration),
            "max_epochs": int(engine.state.max_epochs),
            "epoch_length": int(engine.state.epoch_length or 0),
            "states": states,
            "counters": counters,
            "rng": rng,
        }

    # ------------------------------------------------------------------ events

    def _is_main(self) -> bool:
        return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
            torch.distributed.get_rank() == 0
        )

    def write(self, engine: Engine, finished: bool = False) -> None:
        """Write the checkpoint now (atomically)."""
        if not self._is_main():
            return
        with atomic_paths(self.path) as (tmp,):
            torch.save(self._state(engine, finished), tmp)

    def save(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: write the checkpoint (every ``save_interval`` epochs and at the last epoch)."""
        if engine.state.epoch % self.save_interval == 0 or engine.state.epoch >= engine.state.max_epochs:
            self.write(engine, finished=engine.state.epoch >= engine.state.max_epochs)

    def completed(self, engine: Engine) -> None:
        """``COMPLETED``: mark the checkpoint finished (a re-run skips the stage)."""
        if not self.skipped and engine.state.epoch >= engine.state.max_epochs:
            self.write(engine, finished=True)

    def _remove_stale_temporaries(self, engine: Engine) -> None:
        """Temporary files a killed save left beside the checkpoint and the final files (never under the real name)."""
        for target in [self.path, *final_files(engine)]:
            if target.parent.is_dir() and self._is_main():
                for stale in target.parent.glob(f"{TEMP_PREFIX}*-{target.name}"):
                    stale.unlink(missing_ok=True)

    def load(self, engine: Engine) -> None:
        """``STARTED``: restore the stage from the checkpoint, or start fresh (deleting an old one without resume)."""
        self._remove_stale_temporaries(engine)
        if not self.path.is_file():
            return
        if not self.resume:
            if self._is_main():
                self.path.unlink()
            logger.info("%s: --resume false, training from scratch (deleted %s)", self.stage, self.path)
            return
        ckpt = load_checkpoint(self.path, map_location=engine.state.device)
        hint = f"pass --resume false to train stage '{self.stage}' from scratch, or use a fresh bundle_root"
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ResumeError(f"'{self.path}' is not a monai_kd training checkpoint; {hint}.")
        if ckpt["max_epochs"] != engine.state.max_epochs:
            raise ResumeError(
                f"'{self.path}' was written by a run of {ckpt['max_epochs']} epochs, this run asks for"
                f" {engine.state.max_epochs}; {hint}."
            )
        if ckpt["epoch_length"] != int(engine.state.epoch_length or 0):
            raise ResumeError(
                f"'{self.path}' was written with {ckpt['epoch_length']} iterations per epoch, this run has"
                f" {engine.state.epoch_length} (other data or batch size); {hint}."
            )
        objects = self._objects(engine)
        missing = sorted(set(objects) - set(ckpt["states"]) - set(ckpt["counters"]))
        if missing:
            raise ResumeError(f"'{self.path}' has no state for {missing} of stage '{self.stage}'; {hint}.")
        for name, obj in objects.items():
            try:
                if name.startswith("validator."):
                    obj.state.best_metric = ckpt["counters"][name]["best_metric"]
                    obj.state.best_metric_epoch = ckpt["counters"][name]["best_metric_epoch"]
                else:
                    obj.load_state_dict(ckpt["states"][name])
            except (RuntimeError, ValueError, KeyError) as e:
                raise ResumeError(
                    f"'{self.path}' does not fit {name} of stage '{self.stage}' ({str(e).splitlines()[0]}); {hint}."
                ) from None
        for k, handler in enumerate(attached_handlers(engine)):
            if isinstance(handler, WeightAveraging) and f"averaged.{k}" in ckpt["counters"]:
                handler.num_averaged = ckpt["counters"][f"averaged.{k}"]["num_averaged"]
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(_np_restore(rng["numpy"]))
        random.setstate(_as_tuple(rng["python"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        loader = getattr(engine, "data_loader", None)
        for transform, state in zip(_randomizables(getattr(loader, "dataset", None)), rng["transforms"]):
            transform.R.set_state(_np_restore(state))
        engine.state.epoch = ckpt["epoch"]
        engine.state.iteration = ckpt["iteration"]
        self.resumed_from = ckpt["epoch"]
        if ckpt["finished"]:
            self.skipped = True
            logger.info("%s: finished in %s, skipped (pass --resume false to retrain it)", self.stage, self.path)
            # the final files are there: leave them untouched; else let COMPLETED (CheckpointSaver) write them
            engine.terminate(skip_completed=all(p.is_file() for p in final_files(engine)))
        else:
            logger.info("%s: resuming after epoch %d of %d from %s", self.stage, ckpt["epoch"], ckpt["max_epochs"], self.path)


def final_files(engine: Engine) -> list[Path]:
    """The fixed-name final checkpoints of the ``CheckpointSaver`` handlers attached to ``engine``."""
    files = []
    for handler in attached_handlers(engine):
        name = getattr(handler, "_final_filename", None)
        if getattr(handler, "_final_checkpoint", None) is not None and name:
            files.append(Path(handler.save_dir) / name)
    return files


def _as_tuple(value: Any) -> Any:
    """Python's random state back as nested tuples (it may come back from a checkpoint as lists)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
