"""Run one stage of a bundle's ``multi_gpu_train.json`` (under ``torchrun``) and record what each rank did.

Used by ``test_torchrun.py``; it does what ``python -m monai.bundle run`` does (read the configs, ``initialize``,
the stage, ``finalize``) and, before the stage runs, attaches a handler recording each iteration's loss and the
global batch size, so the test can compare ranks with a one-process run::

    torchrun --nproc_per_node=2 tests/integration/torchrun_bundle.py --configs '[...]' --meta META \
        --stage run_student --overrides '{...}' --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--configs", required=True, help="JSON list of config files (train.json first)")
    args.add_argument("--meta", required=True)
    args.add_argument("--stage", default="run_student")
    args.add_argument("--overrides", default="{}", help="JSON object of config overrides")
    args.add_argument("--out", required=True, help="folder for rank<N>.json")
    opts = args.parse_args()

    import torch
    import torch.distributed as dist
    from ignite.engine import Events
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(json.loads(opts.configs))
    parser.read_meta(opts.meta)
    parser.update(json.loads(opts.overrides))
    parser.get_parsed_content("initialize")
    # the stage seeds, then builds the student; building the trainer here first must see the same seed
    set_determinism(seed=parser.get_parsed_content("seed"))
    trainer = parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    batches: list[int] = []

    def record(engine) -> None:
        out = engine.state.output
        first = out[0] if isinstance(out, list) else out
        losses.append(float(first["loss"]))
        batches.append(len(out) if isinstance(out, list) else len(out["image"]))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    indices: list[list[int]] = []

    def identities(engine) -> None:  # each row's ``index``, else a checksum of its image
        batch = engine.state.batch
        if "index" in batch:
            indices.append(torch.as_tensor(batch["index"]).tolist())
        else:
            indices.append([round(float(x.double().sum()), 3) for x in batch["image"]])

    trainer.add_event_handler(Events.ITERATION_STARTED, identities)
    sums: dict[str, float] = {}

    def checksums(engine) -> None:  # after every STARTED handler (teachers loaded), before the first step
        sums["student"] = float(sum(p.double().sum() for p in trainer.network.parameters()))
        sums["teachers"] = float(sum(p.double().sum() for t in trainer.teachers for p in t.parameters()))

    trainer.add_event_handler(Events.ITERATION_STARTED(once=1), checksums)
    parser.get_parsed_content(opts.stage)
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered = [None] * world
    dist.all_gather_object(gathered, {"losses": losses, "batches": batches, "indices": indices})
    record_ = {
        "rank": rank,
        "world_size": world,
        "network": type(trainer.network).__name__,
        "teachers": [type(t).__name__ for t in trainer.teachers],
        "teacher_requires_grad": any(p.requires_grad for t in trainer.teachers for p in t.parameters()),
        "losses": losses,
        "batches": batches,
        # the loss of the global batch: mean of the ranks' losses weighted by their rows (rows are equal here)
        "global_losses": [
            sum(g["losses"][i] * g["batches"][i] for g in gathered) / sum(g["batches"][i] for g in gathered)
            for i in range(len(losses))
        ],
        # the samples of each global batch (every rank's rows), to check both runs saw the same ones
        "global_indices": [sorted(i for g in gathered for i in g["indices"][k]) for k in range(len(losses))],
        "checksums": sums,
        "backend": dist.get_backend(),
        "threads": torch.get_num_threads(),
    }
    if "finalize" in parser.config:
        parser.get_parsed_content("finalize")
    Path(opts.out).mkdir(parents=True, exist_ok=True)
    (Path(opts.out) / f"rank{rank}.json").write_text(json.dumps(record_))
    print(f"rank {rank}/{world} finished, pid {os.getpid()}")


if __name__ == "__main__":
    main()
