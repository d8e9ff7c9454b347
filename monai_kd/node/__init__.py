# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""A DICOM node beside a PACS (``monai-kd serve``) and DICOMweb inference (``monai-kd infer-dicomweb``).

- :mod:`.server`: :class:`DicomNode`, the storage SCP that collects series, runs bundles and sends results.
- :mod:`.queue`: the persistent on-disk work queue (crash-safe, resumable).
- :mod:`.routing`: routing rules (Modality / Series Description -> bundle).
- :mod:`.scu`: sending files by C-STORE.
- :mod:`.dicomweb`: WADO-RS in, inference, STOW-RS out.

pynetdicom and dicomweb-client are imported only when used (``pip install monai-kd[node]``).
"""

from __future__ import annotations

from .queue import Job, WorkQueue
from .routing import Route, RoutingError, load_routes, match_route
from .scu import DicomAddress, StoreError, parse_address, store_files

__all__ = [
    "DicomAddress",
    "Job",
    "Route",
    "RoutingError",
    "StoreError",
    "WorkQueue",
    "load_routes",
    "match_route",
    "parse_address",
    "store_files",
]
