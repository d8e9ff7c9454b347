"""What a bundle's run id would train, without training: a fingerprint of every engine it would run.

``Engine.run`` is replaced by a recorder, then the run id is resolved exactly as ``monai.bundle run`` resolves it,
so every network, datalist, optimizer and handler is built in the run's own order. Each recorded engine gives its
type, epochs, network and teacher weights (hashes: these depend on the seed and on everything drawn from the random
generators before), the random generators' state when training would start, its data (hashes of the datalist
items), optimizer hyperparameters, loss, and its handlers with their settings (e.g. the epoch weight averaging
starts at). Two configs with equal fingerprints train the same numbers for the same seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from unittest import mock

import numpy as np
import torch
from ignite.engine import Engine


def _digest(value, h) -> None:
    """Feed a datalist item / tensor / scalar tree into the hash ``h``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        h.update(str((value.dtype, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _digest(value[k], h)
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _digest(v, h)
    elif isinstance(value, np.generic):
        h.update(repr(value.item()).encode())
    else:
        h.update(repr(value).encode())


def digest(value) -> str:
    h = hashlib.sha256()
    _digest(value, h)
    return h.hexdigest()[:16]


def _module(module: torch.nn.Module) -> str:
    return f"{type(module).__name__}:{digest(dict(module.state_dict()))}"


#: settings that only say how another recorded value was derived (``start_fraction`` gives ``start_epoch``)
DERIVED = {"start_fraction"}


def _scalars(obj) -> dict:
    out = {}
    for k, v in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else []:
        if k in DERIVED:
            continue
        if isinstance(v, (bool, int, float, str, type(None))) and not k.startswith("__"):  # private too (file names)
            out[k] = v
        elif isinstance(v, torch.nn.Module) and k in ("network", "averaged"):
            out[k] = type(v).__name__
    return out


def _loader(loader) -> dict | None:
    if loader is None:
        return None
    dataset = getattr(loader, "dataset", loader)
    data = getattr(dataset, "data", None)
    if data is None and hasattr(dataset, "datasets"):  # several datasets (WeCKD's chain)
        data = [getattr(d, "data", None) for d in dataset.datasets]
    return {"dataset": type(dataset).__name__, "len": len(dataset), "data": digest(data),
            "batch_size": getattr(loader, "batch_size", None)}


def engine_fingerprint(engine: Engine) -> dict:
    """The settings and starting state of one engine about to run."""
    fp = {
        "type": type(engine).__name__,
        "max_epochs": engine.state.max_epochs,
        "epoch_length": engine.state.epoch_length,
        "rng": digest([torch.get_rng_state(), np.random.get_state()[1], random.getstate()[1]]),
        "data": _loader(getattr(engine, "data_loader", None)),
    }
    for name, value in sorted(vars(engine).items()):
        if name in ("data_loader", "state", "logger", "_event_handlers", "_process_function", "_dataloader_iter"):
            continue
        if isinstance(value, torch.nn.Module):
            fp[name] = _module(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.nn.Module) for v in value):
            fp[name] = [_module(v) for v in value]
        elif isinstance(value, torch.optim.Optimizer):
            fp[name] = [type(value).__name__] + [
                {k: v for k, v in g.items() if k != "params"} | {"n": sum(p.numel() for p in g["params"])}
                for g in value.param_groups
            ]
        elif isinstance(value, torch.utils.data.DataLoader):
            fp[name] = _loader(value)
        elif isinstance(value, (bool, int, float, str)):
            fp[name] = value
        elif value is not None and name in ("loss_function", "step", "inferer", "prepare_batch"):
            fp[name] = [type(value).__name__, _scalars(value)]
    handlers = []
    for event, entries in engine._event_handlers.items():
        for entry in entries:
            func = entry[0]
            owner = getattr(func, "__self__", func)
            record = [re.sub(r" at 0x[0-9a-f]+", "", str(event)), type(owner).__name__, getattr(func, "__name__", ""), _scalars(owner)]
            validator = getattr(owner, "validator", None)
            if isinstance(validator, Engine):
                record.append({"network": _module(validator.network), "data": _loader(validator.data_loader),
                               "metrics": sorted(getattr(validator, "_key_metric_name", None) or [])})
            handlers.append(record)
    fp["handlers"] = handlers
    return fp


def run_fingerprint(config_files: Sequence[str], run_id: str = "run", **overrides) -> list[dict]:
    """Resolve ``run_id`` of the configs with every ``Engine.run`` recorded instead of run."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(config_files))
    parser.update(overrides)
    records: list[dict] = []

    def record(engine, *args, **kwargs):
        records.append(engine_fingerprint(engine))
        return engine.state

    with mock.patch.object(Engine, "run", record):
        parser.get_parsed_content(run_id)
    root = overrides.get("bundle_root")
    if root:  # the same config in another folder has the same fingerprint
        records = json.loads(json.dumps(records, default=str).replace(str(root), "<bundle_root>"))
    return records


def diff(old: list[dict], new: list[dict]) -> list[str]:
    """Readable differences of two fingerprints (empty: equal)."""
    out = []
    if len(old) != len(new):
        out.append(f"{len(old)} engines before, {len(new)} after")
    for i, (a, b) in enumerate(zip(old, new)):
        for key in sorted(set(a) | set(b)):
            if key == "handlers" and a.get(key) != b.get(key):
                ha, hb = a.get(key) or [], b.get(key) or []
                if len(ha) != len(hb):
                    out.append(f"engine {i} ({a.get('type')}): {len(ha)} handlers before, {len(hb)} after")
                for x, y in zip(ha, hb):
                    if x != y:
                        out.append(f"engine {i} ({a.get('type')}) handler: {json.dumps(x, default=str)[:400]} != "
                                   f"{json.dumps(y, default=str)[:400]}")
            elif a.get(key) != b.get(key):
                out.append(f"engine {i} ({a.get('type')}) {key}: {json.dumps(a.get(key), default=str)[:300]} != "
                           f"{json.dumps(b.get(key), default=str)[:300]}")
    return out
