"""Teacher-output cache (offline KD): frozen teachers run once per sample and augmentation view, reused every epoch.

Distillation's cost is the teacher's forward pass. With frozen teachers in eval mode a teacher's output for a
sample depends only on the sample's (augmented) image, so it can be computed once and read back in every later
epoch. :class:`TeacherCacheStep` is a :class:`~monai_kd.engines.TrainingStep` wrapper that does this for any step
that gets its teacher outputs through :meth:`DistillationEngine.teacher_forward` (the default step, MMKD's
``MetaWeightedStep``, DANN's step; for ``SemiSupervisedStep`` the labelled rows come from the cache and the
unlabelled weak view still runs live):

- every batch carries a stable sample identity (``id_key``, default ``index``: ``medmnist_datalist`` and the
  domain datalists already give one) and, with random augmentation, the view it shows (``view_key``);
- rows whose ``(identity, view)`` is cached are read back; the others run through the teachers (one call for all
  of them) and are stored -- logits and every tapped teacher feature a loss uses;
- storage is in memory (``storage="memory"``, on the outputs' device) or in memory-mapped ``.npy`` files under
  ``cache_dir`` (``storage="memmap"``, for large dense outputs; reused by a later run with the same key);
- the key hashes the teachers' weights (read when the run starts, after ``PretrainedLoader`` has loaded them), the
  dataset's transform and view seed, the tapped layers and the storage dtype: a changed checkpoint or transform
  starts a new cache instead of serving stale outputs.

Random augmentation needs :class:`SeededViews`: view ``v`` of sample ``i`` is the transform run with a random state
seeded by ``(seed, i, v)``, so it is the same image whenever it is drawn; each epoch draws one of ``num_views`` views
per sample (from the global RNG, so ``set_determinism`` makes it reproducible). ``num_views=0`` is the live default:
exactly ``monai.data.Dataset``. With augmentation off the cache is exact: cached and live training give the same
losses on the same batches (``tests/engines/test_teacher_cache.py``).

Example (bundle JSON)::

    "train#dataset": {"_target_": "monai_kd.engines.SeededViews", "data": "@train_datalist",
                      "transform": "@train#preprocessing", "num_views": 4, "seed": "@seed"},
    "train#trainer#step": "$monai_kd.engines.TeacherCacheStep()"
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Randomizable
from monai.utils import convert_to_tensor, optional_import

from monai_kd.engines.distillation_engine import DistillationEngine, StepContext, TrainingStep

Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["SeededViews", "TeacherCacheStep", "attach_teacher_cache", "describe_transform", "transform_fingerprint"]

CACHE_FORMAT = 1  # part of the key: bump when the stored layout changes


class SeededViews(Dataset):
    """``monai.data.Dataset`` whose random augmentation draws one of ``num_views`` reproducible views per sample.

    Item ``i`` of an epoch is view ``v`` (drawn uniformly with ``torch.randint`` from the global RNG), made by
    running ``transform`` with a random state seeded by ``(seed, i, v)``, and carries ``view_key: v``.
    :class:`TeacherCacheStep` then stores one teacher output per ``(sample, view)``.

    Args:
        data: the datalist (each item a dict with a stable identity, e.g. ``index``).
        transform: the training transform (random transforms are re-seeded per view).
        num_views: views per sample; ``0`` is the live default (``monai.data.Dataset`` exactly, no ``view`` key).
        seed: seed of the views.
        view_key: key of the view number in each item.
    """

    def __init__(self, data: Sequence, transform: Any = None, num_views: int = 1, seed: int = 0, view_key: str = "view"):
        super().__init__(data=data, transform=transform)
        if int(num_views) < 0:
            raise ValueError(f"num_views must be >= 0 (0: live, every epoch a fresh augmentation), got {num_views}.")
        self.num_views = int(num_views)
        self.seed = int(seed)
        self.view_key = view_key

    def _transform(self, index: int) -> Any:
        if self.num_views == 0:
            return super()._transform(index)
        view = int(torch.randint(self.num_views, ()).item()) if self.num_views > 1 else 0
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=zlib.crc32(f"{self.seed}/{index}/{view}".encode()))
        item = super()._transform(index)
        if isinstance(item, dict):
            item[self.view_key] = view
        return item


def describe_transform(obj: Any, depth: int = 0) -> Any:
    """A JSON-able description of a transform's configuration (class names and plain attributes), for cache keys.

    Random states (``R``) and private attributes are left out, so the description changes when a parameter
    changes, not when the transform draws numbers.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [describe_transform(x, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return {str(k): describe_transform(v, depth + 1) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (np.ndarray, torch.Tensor)):  # mostly drawn values (affine, noise); see transform_fingerprint
        return "array"
    if isinstance(obj, (np.generic, torch.dtype, np.dtype, torch.device)):
        return str(obj)
    if callable(obj) and not hasattr(obj, "__dict__"):  # builtins: their name, not their address
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if depth > 8 or not hasattr(obj, "__dict__"):
        return name
    attrs = {k: v for k, v in vars(obj).items() if not k.startswith("_") and k != "R" and not k.endswith("_params")}
    return {"class": name, **{k: describe_transform(v, depth + 1) for k, v in sorted(attrs.items())}}


def transform_fingerprint(dataset: Any, probes: int = 2) -> str:
    """Hash of the dataset's transform applied (on a copy, with fixed seeds) to its first ``probes`` items.

    Complements :func:`describe_transform`, which leaves out array attributes because MONAI's random transforms keep
    their last drawn values (affine matrices, noise) in them: a changed parameter changes these outputs.
    """
    transform = getattr(dataset, "transform", None)
    data = getattr(dataset, "data", None)
    if transform is None or not isinstance(data, Sequence) or not len(data):
        return ""
    transform = copy.deepcopy(transform)
    digest = hashlib.sha256()
    for index in range(min(probes, len(data))):
        for seed in (0, 1):
            if isinstance(transform, Randomizable):
                transform.set_random_state(seed=seed)
            item = transform(copy.deepcopy(data[index]))
            values = item.values() if isinstance(item, dict) else [item]
            for value in values:
                if isinstance(value, (np.ndarray, torch.Tensor)):
                    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
                    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _teacher_digest(teachers: Sequence[torch.nn.Module]) -> str:
    digest = hashlib.sha256()
    for teacher in teachers:
        for name, tensor in teacher.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Store:
    """Rows of named arrays addressed by ``(sample id, view)``; in memory (torch) or memory-mapped ``.npy``."""

    def __init__(self, storage: str, directory: str | None, capacity: int, dtype: torch.dtype | None) -> None:
        self.storage, self.directory, self.capacity, self.dtype = storage, directory, capacity, dtype
        self.slots: dict[tuple[int, int], int] = {}
        self.arrays: dict[str, Any] = {}
        if storage == "memmap" and os.path.isfile(self._meta_path()):  # a previous run with the same key
            with open(self._meta_path()) as f:
                meta = json.load(f)
            self.slots = {(int(i), int(v)): s for (i, v), s in zip(meta["keys"], range(len(meta["keys"])))}
            self.arrays = {n: np.load(self._array_path(n), mmap_mode="r+") for n in meta["names"]}
            self.capacity = max(self.capacity, *(len(a) for a in self.arrays.values())) if self.arrays else self.capacity

    def _meta_path(self) -> str:
        return os.path.join(self.directory or "", "meta.json")

    def _array_path(self, name: str) -> str:
        return os.path.join(self.directory or "", name.replace("/", "__") + ".npy")

    def lookup(self, keys: list[tuple[int, int]]) -> list[int | None]:
        return [self.slots.get(k) for k in keys]

    def read(self, name: str, slots: list[int], device: torch.device) -> torch.Tensor:
        array = self.arrays[name]
        if self.storage == "memory":
            return array[torch.as_tensor(slots, device=array.device)].to(device)
        return torch.from_numpy(np.ascontiguousarray(array[np.asarray(slots)])).to(device)

    def write(self, keys: list[tuple[int, int]], values: dict[str, torch.Tensor]) -> None:
        slots = []
        for key in keys:
            if key not in self.slots:
                if len(self.slots) >= self.capacity and self.storage == "memmap":
                    raise RuntimeError(
                        f"teacher cache is full ({self.capacity} rows): more distinct (sample, view) pairs than the "
                        "dataset length x views; are the sample identities unique?"
                    )
                self.slots[key] = len(self.slots)
            slots.append(self.slots[key])
        for name, value in values.items():
            value = convert_to_tensor(value, track_meta=False).detach()
            if self.dtype is not None:
                value = value.to(self.dtype)
            self._ensure(name, value, max(slots) + 1)
            if self.storage == "memory":
                self.arrays[name][torch.as_tensor(slots, device=value.device)] = value.to(self.arrays[name].device)
            else:
                self.arrays[name][np.asarray(slots)] = value.cpu().numpy()

    def _ensure(self, name: str, value: torch.Tensor, rows: int) -> None:
        array = self.arrays.get(name)
        if self.storage == "memory":
            if array is None or len(array) < rows:
                grown = torch.empty((max(rows, 2 * (0 if array is None else len(array)), 64), *value.shape[1:]),
                                    dtype=value.dtype, device=value.device)
                if array is not None:
                    grown[: len(array)] = array
                self.arrays[name] = grown
            return
        if array is None:
            os.makedirs(self.directory or ".", exist_ok=True)
            self.arrays[name] = np.lib.format.open_memmap(
                self._array_path(name), mode="w+", dtype=value.cpu().numpy().dtype,
                shape=(self.capacity, *value.shape[1:]),
            )

    def flush(self, key: str) -> None:
        """Memory-mapped storage: write the arrays and the slot table (a later run with this key reuses them)."""
        if self.storage != "memmap" or not self.arrays:
            return
        for array in self.arrays.values():
            array.flush()
        keys = sorted(self.slots, key=self.slots.get)
        tmp = self._meta_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"key": key, "format": CACHE_FORMAT, "names": sorted(self.arrays), "keys": keys}, f)
        os.replace(tmp, self._meta_path())


class TeacherCacheStep(TrainingStep):
    """Serve frozen teachers' outputs and tapped features from a cache keyed by sample identity and view.

    Wraps another step (default: plain distillation) and forwards every hook to it; only the teachers' forward
    pass on the rows of the current batch is replaced by a cache read, with the missing rows computed live once and
    stored. Attach-time checks refuse a trainer without teachers; the first batch without ``id_key`` is refused
    with a clear error.

    Args:
        step: the wrapped step; default :class:`~monai_kd.engines.TrainingStep` (plain distillation).
        storage: ``"memory"`` (tensors on the outputs' device) or ``"memmap"`` (``.npy`` files under ``cache_dir``).
        cache_dir: folder of memory-mapped caches (one sub-folder per key); required for ``"memmap"``.
        id_key: batch key of each sample's stable identity (an ``int``).
        view_key: batch key of the augmentation view (absent: view 0).
        dtype: storage dtype (e.g. ``torch.float16`` halves a large dense cache; ``None`` keeps the outputs' dtype,
            which is exact).
        capacity: rows to reserve for ``"memmap"``; default the training dataset's length times its ``num_views``
            (:class:`SeededViews`; 1 for another dataset).
    """

    def __init__(
        self,
        step: TrainingStep | None = None,
        storage: str = "memory",
        cache_dir: str | None = None,
        id_key: str = "index",
        view_key: str = "view",
        dtype: torch.dtype | str | None = None,
        capacity: int | None = None,
    ) -> None:
        if storage not in ("memory", "memmap"):
            raise ValueError(f"storage must be 'memory' or 'memmap', got {storage!r}.")
        if storage == "memmap" and not cache_dir:
            raise ValueError("storage='memmap' needs cache_dir (a folder for the memory-mapped teacher outputs).")
        if step is not None and not isinstance(step, TrainingStep):
            raise TypeError(f"step must be a monai_kd.engines.TrainingStep, got {type(step).__name__}.")
        self.step = TrainingStep() if step is None else step
        self.storage, self.cache_dir, self.id_key, self.view_key = storage, cache_dir, id_key, view_key
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.capacity = capacity
        self.key: str | None = None
        self.store: _Store | None = None
        self.hits = 0
        self.misses = 0
        self._keyed = False

    # -- wiring -----------------------------------------------------------------------------------------------
    def attach(self, engine: DistillationEngine) -> None:
        """Check the trainer, attach the wrapped step, and (re)key the cache whenever a run starts."""
        if not engine.teachers:
            raise ValueError("TeacherCacheStep needs a trainer with frozen teachers.")
        self.step.attach(engine)
        self._attach_handlers(engine)

    def _attach_handlers(self, engine: DistillationEngine) -> None:
        # the key is computed at the first batch of each run, after every STARTED handler (PretrainedLoader) ran
        engine.add_event_handler(Events.STARTED, self._unkey)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.flush)
        engine.add_event_handler(Events.COMPLETED, self.flush)

    def _unkey(self, engine: DistillationEngine | None = None) -> None:
        self._keyed = False

    def cache_key(self, engine: DistillationEngine) -> str:
        """Hash of the teachers' weights, the dataset's transform and view seed, the tapped layers and the dtype."""
        dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        parts = {
            "format": CACHE_FORMAT,
            "teachers": _teacher_digest(engine.teachers),
            "transform": describe_transform(getattr(dataset, "transform", None)),
            "transform_outputs": transform_fingerprint(dataset),
            "views_seed": getattr(dataset, "seed", None) if isinstance(dataset, SeededViews) else None,
            "layers": [sorted(tap.layers) if tap is not None else [] for tap in engine.teacher_taps],
            "inferer": describe_transform(engine.inferer),
            "dtype": str(self.dtype),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def open(self, engine: DistillationEngine) -> None:
        """Key the cache for this run; a new key (changed teacher weights or transform) starts an empty cache."""
        key = self.cache_key(engine)
        if key == self.key and self.store is not None:
            return
        capacity = self.capacity
        if capacity is None:
            dataset = getattr(engine.data_loader, "dataset", None)
            length = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
            capacity = length * max(1, getattr(dataset, "num_views", 1)) or 1 << 16
        directory = os.path.join(self.cache_dir, key[:16]) if self.cache_dir else None
        self.key, self.store = key, _Store(self.storage, directory, capacity, self.dtype)

    def flush(self, engine: DistillationEngine | None = None) -> None:
        """Write memory-mapped outputs and their slot table to disk."""
        if self.store is not None and self.key is not None:
            self.store.flush(self.key)

    # -- hooks ------------------------------------------------------------------------------------------------
    def prepare(self, ctx: StepContext) -> None:  # noqa: D102
        self.step.prepare(ctx)

    def teacher_outputs(self, ctx: StepContext) -> None:
        """The wrapped step's ``teacher_outputs`` with ``engine.teacher_forward`` served from the cache."""
        engine = ctx.engine
        if not self._keyed:
            self.open(engine)
            self._keyed = True
        keys = self._batch_keys(engine.state.batch, len(ctx.inputs))
        live = engine.teacher_forward

        def cached_forward(inputs: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[list, list]:
            n = len(ctx.inputs)
            if inputs is not ctx.inputs and not (len(inputs) >= n and torch.equal(inputs[:n], ctx.inputs)):
                return live(inputs, *args, **kwargs)  # not this batch's rows: nothing to serve
            return self._serve(inputs, n, keys, live, args, kwargs)

        engine.teacher_forward = cached_forward  # type: ignore[method-assign]
        try:
            self.step.teacher_outputs(ctx)
        finally:
            del engine.teacher_forward

    def before_step(self, ctx: StepContext) -> None:  # noqa: D102
        self.step.before_step(ctx)

    def student_forward(self, ctx: StepContext) -> None:  # noqa: D102
        self.step.student_forward(ctx)

    def student_loss(self, ctx: StepContext) -> torch.Tensor:  # noqa: D102
        return self.step.student_loss(ctx)

    def after_backward(self, ctx: StepContext) -> None:  # noqa: D102
        self.step.after_backward(ctx)

    def after_step(self, ctx: StepContext) -> None:  # noqa: D102
        self.step.after_step(ctx)

    # -- the cache --------------------------------------------------------------------------------------------
    def _batch_keys(self, batch: Any, n: int) -> list[tuple[int, int]]:
        if not isinstance(batch, dict) or self.id_key not in batch:
            raise KeyError(
                f"TeacherCacheStep needs a stable sample identity under '{self.id_key}' in every batch (e.g. the "
                "'index' of medmnist_datalist items); set id_key or add the key to the datalist."
            )
        ids = torch.as_tensor(batch[self.id_key]).view(-1).tolist()
        views = torch.as_tensor(batch[self.view_key]).view(-1).tolist() if self.view_key in batch else [0] * len(ids)
        if len(ids) != n:
            raise ValueError(f"batch has {n} images but {len(ids)} '{self.id_key}' values.")
        return [(int(i), int(v)) for i, v in zip(ids, views)]

    def _serve(self, inputs: torch.Tensor, n: int, keys: list, live: Any, args: tuple, kwargs: dict) -> tuple[list, list]:
        """Outputs for ``inputs``: cached rows of the first ``n`` read back, the rest (misses + extra rows) run live."""
        store = self.store
        slots = store.lookup(keys)
        miss = [r for r, s in enumerate(slots) if s is None]
        hit = [r for r, s in enumerate(slots) if s is not None]
        self.hits += len(hit)
        self.misses += len(miss)
        extra = len(inputs) - n
        if not hit:  # nothing cached: one live call, exactly as without the cache
            outputs, features = live(inputs, *args, **kwargs)
            store.write(keys, self._named([o[:n] for o in outputs], [_rows(f, 0, n) for f in features]))
            return outputs, features
        run = None
        if miss or extra:
            parts = ([inputs[:n][miss]] if miss else []) + ([inputs[n:]] if extra else [])
            run = live(torch.cat(parts) if len(parts) > 1 else parts[0], *args, **kwargs)
            if miss:
                m = len(miss)
                store.write([keys[r] for r in miss], self._named([o[:m] for o in run[0]], [_rows(f, 0, m) for f in run[1]]))
        device = inputs.device
        names = sorted(store.arrays)
        fresh = self._named(run[0], run[1]) if run is not None else {}
        assembled = {}
        for name in names:
            row = store.read(name, [slots[r] for r in hit], device)
            full = row.new_empty((n, *row.shape[1:]))
            full[torch.as_tensor(hit, device=device)] = row
            if miss:
                full[torch.as_tensor(miss, device=device)] = fresh[name][: len(miss)].to(row.dtype)
            if extra:
                full = torch.cat([full, fresh[name][len(miss):].to(row.dtype)])
            assembled[name] = full
        k = sum(name.endswith("/out") for name in names)
        outputs = [assembled[f"{t}/out"] for t in range(k)]
        if not any("/feat/" in name for name in names):
            return outputs, []
        features = [{nm.split("/feat/", 1)[1]: v for nm, v in assembled.items() if nm.startswith(f"{t}/feat/")} for t in range(k)]
        return outputs, features

    @staticmethod
    def _named(outputs: list, features: list) -> dict[str, torch.Tensor]:
        named = {f"{t}/out": o for t, o in enumerate(outputs)}
        for t, feats in enumerate(features):
            named.update({f"{t}/feat/{layer}": v for layer, v in feats.items()})
        return named


def _rows(features: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in features.items()}


def attach_teacher_cache(engine: DistillationEngine, **kwargs: Any) -> DistillationEngine:
    """Switch an already built trainer to cached teacher outputs: wrap its step in a :class:`TeacherCacheStep`.

    For trainers that build their own step (``SemiSupervisedDistillationTrainer``, ``DomainAdversarialTrainer``), or
    from a bundle expression: ``"$monai_kd.engines.attach_teacher_cache(@train#trainer) if @teacher_cache else
    @train#trainer"``.

    Args:
        engine: a :class:`DistillationEngine` with frozen teachers.
        kwargs: :class:`TeacherCacheStep` arguments (``storage``, ``cache_dir``, ``id_key``, ...).

    Returns:
        ``engine`` (its ``step`` now the cache wrapping the previous step).
    """
    if isinstance(engine.step, TeacherCacheStep):
        return engine
    if not engine.teachers:
        raise ValueError(f"{type(engine).__name__} has no frozen teachers to cache.")
    cache = TeacherCacheStep(step=engine.step, **kwargs)
    cache._attach_handlers(engine)  # the wrapped step is attached already
    engine.step = cache
    return engine
