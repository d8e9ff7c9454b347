# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""``monai-kd serve``: a DICOM node beside a PACS -- receive series, run a bundle's student, send back SEG / SR.

The node is a pynetdicom storage SCP. Each received instance is checked (:func:`check_instance`: UIDs, an
image, pixel data complete, a transfer syntax it can decode) and refused with a C-STORE failure status and a
logged reason, or written to the :class:`~monai_kd.node.queue.WorkQueue` on disk *before* it is acknowledged.
A series is complete when no instance of it arrived for ``quiet_time`` seconds and the associations that sent it
have ended (a sender that stalls mid-series does not get half a series processed); it is then queued, routed to a
bundle by the :mod:`~monai_kd.node.routing` rules (Modality / Series Description), and processed by one of
``workers`` threads with the bundle's model loaded once at start-up
(:class:`~monai_kd.dicom_inference.BundlePredictor`). The DICOM SEG (segmentation bundles) or Comprehensive SR
(classification bundles) is written to ``output_dir`` and/or sent by C-STORE to ``destination``. A series that
cannot be used (mixed orientations, a missing slice, no matching route, too large, ...) is moved to
``quarantine/`` with its reason; the node keeps serving.

Bounds: at most ``workers`` series are in memory at once, a series with more than ``max_slices`` slices or
``max_voxels`` voxels is refused before it is decoded, at most ``max_associations`` associations are served
at once, and C-STOREs are refused with *Out of Resources* (``0xA700``) when the work folder's disk has less than
``min_free_mb`` free.

Crash safety: see :mod:`monai_kd.node.queue`. A restart -- even after ``kill -9`` -- requeues interrupted
series, delivers already computed results again (same UIDs), and waits a full quiet time for series whose
instances were still arriving, so every series sent gets exactly one result.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_kd.io.dicom_series import _is_image, _object_name

from .queue import Job, WorkQueue
from .routing import Route, match_route
from .scu import DicomAddress, StoreError, store_files

__all__ = ["DicomNode", "InstanceRefused", "check_instance"]

logger = logging.getLogger("monai_kd.node")

# C-STORE statuses (PS3.4 Annex B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
STORED_WARNING = (0xB000, 0xB006, 0xB007)
SLOW_STORE_SECONDS = 5.0


class InstanceRefused(ValueError):
    """A received instance cannot be used; ``status`` is the C-STORE failure status to answer."""

    def __init__(self, reason: str, status: int = CANNOT_UNDERSTAND) -> None:
        super().__init__(reason)
        self.status = status


def _expected_pixel_bytes(ds: Dataset) -> int:
    """Length of native (uncompressed) *Pixel Data* the header announces."""
    bits = int(ds.get("BitsAllocated", 16) or 16)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    count = int(ds.Rows) * int(ds.Columns) * samples * frames
    return (count * bits + 7) // 8


def check_instance(ds: Dataset, transfer_syntax: str) -> None:
    """Check that a received instance is an image of a series the node can read.

    Args:
        ds: the received dataset (its pixel data is parsed, not decoded).
        transfer_syntax: the transfer syntax it was sent in.

    Raises:
        InstanceRefused: With the reason and C-STORE status: missing UIDs, not an image (SR, KO, PR, SEG...),
            truncated or missing pixel data, or a transfer syntax no installed decoder can read.
    """
    from pydicom.pixels import get_decoder

    missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID") if not ds.get(k)]
    if missing:
        raise InstanceRefused(f"no {', '.join(missing)}: the series cannot be collected")
    if not _is_image(ds):
        raise InstanceRefused(
            f"not an image: {_object_name(ds)}; the node processes image series only", DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        )
    syntax = UID(transfer_syntax)
    try:
        decodable = get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        decodable = False
    if not decodable:
        raise InstanceRefused(f"unsupported transfer syntax {syntax.name or syntax} ({syntax}): no decoder installed")
    if "Rows" not in ds or "Columns" not in ds or "PixelData" not in ds:
        raise InstanceRefused("no pixel data (or no Rows/Columns): truncated or not a complete image")
    pixels = ds.PixelData
    if not syntax.is_encapsulated:
        if len(pixels) < _expected_pixel_bytes(ds):
            raise InstanceRefused(
                f"truncated pixel data: {len(pixels)} bytes, the header announces {_expected_pixel_bytes(ds)}"
            )
    else:
        from pydicom.encaps import generate_fragments

        try:
            fragments = sum(1 for _ in generate_fragments(pixels))
        except Exception as e:  # noqa: BLE001 - any parse failure means a broken encapsulation
            raise InstanceRefused(f"broken encapsulated pixel data (truncated?): {e}") from e
        if fragments == 0:
            raise InstanceRefused("encapsulated pixel data without any fragment (truncated?)")


class DicomNode:
    """The node: storage SCP, on-disk queue, workers with loaded bundles, delivery.

    Args:
        work_dir: queue folder (see :mod:`monai_kd.node.queue`); keep it on a local disk.
        routes: routing rules, first match wins.
        ae_title: our AE title (the PACS sends to it; checked against the called AE title).
        host: address to listen on (``127.0.0.1`` unless the PACS is on another machine).
        port: port to listen on (``0``: any free port, see :attr:`port` after :meth:`start`).
        quiet_time: seconds without a new instance (after the sending association ended) after which a series
            is complete.
        workers: series processed at once (bounds memory: each holds one volume and the model's activations).
        destination: AE to C-STORE results to.
        output_dir: folder to write results to.
        device: torch device of the models.
        max_slices: series with more slices are refused (quarantined) before decoding.
        max_voxels: series with more voxels (rows x columns x slices) are refused before decoding.
        max_associations: associations served at once.
        min_free_mb: free disk space below which C-STOREs are refused with *Out of Resources*.
        retry_delay: seconds to wait before retrying a delivery that failed (the result is kept).
        fsync: flush every received instance to disk before acknowledging it.
    """

    def __init__(
        self,
        work_dir: str | Path,
        routes: Sequence[Route],
        ae_title: str = "MONAIKD",
        host: str = "127.0.0.1",
        port: int = 11112,
        quiet_time: float = 30.0,
        workers: int = 1,
        destination: DicomAddress | None = None,
        output_dir: str | Path | None = None,
        device: str = "cpu",
        max_slices: int = 2000,
        max_voxels: int = 512 * 512 * 2000,
        max_associations: int = 16,
        min_free_mb: float = 500.0,
        retry_delay: float = 10.0,
        fsync: bool = True,
    ) -> None:
        if not routes:
            raise ValueError("a node needs at least one route (a bundle to run).")
        if destination is None and output_dir is None:
            raise ValueError("give a destination AE and/or an output folder for the results.")
        if len(ae_title) > 16 or not ae_title.strip():
            raise ValueError(f"AE title {ae_title!r} must have 1 to 16 characters.")
        self.queue = WorkQueue(work_dir, fsync=fsync)
        self.routes = list(routes)
        self.ae_title, self.host, self.port = ae_title, host, int(port)
        self.quiet_time, self.workers = float(quiet_time), max(1, int(workers))
        self.destination = destination
        self.output_dir = None if output_dir is None else Path(output_dir).expanduser().resolve()
        self.device = device
        self.max_slices, self.max_voxels = int(max_slices), int(max_voxels)
        self.max_associations, self.min_free_mb = int(max_associations), float(min_free_mb)
        self.retry_delay = float(retry_delay)
        self.predictors: dict[tuple[str, str | None], Any] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._store_stats = {"count": 0, "seconds": 0.0, "max_seconds": 0.0}  # C-STOREs acknowledged
        self._server: Any = None

    # -- life cycle --------------------------------------------------------------------------------------------
    def load_models(self) -> None:
        """Load every route's bundle once (shared by all workers and series)."""
        from monai_kd.dicom_inference import BundlePredictor

        for route in self.routes:
            key = (route.bundle, route.ckpt_file, route.overlay)
            if key not in self.predictors:
                start = time.perf_counter()
                self.predictors[key] = BundlePredictor(route.bundle, ckpt_file=route.ckpt_file, device=self.device,
                                                       overlay=route.overlay)
                logger.info("route %s: %s bundle loaded in %.1f s", route, self.predictors[key].task,
                            time.perf_counter() - start)

    def start(self) -> None:
        """Recover the queue, load the models, start the workers and the listener (returns at once)."""
        counts = self.queue.recover()
        logger.info(
            "work folder %s: %d interrupted series requeued, %d already delivered, %d queued, %d still incoming",
            self.queue.root, counts["requeued"], counts["already_done"], counts["queued"], counts["incoming"],
        )
        self.load_models()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._seal_loop, name="node-seal", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"node-worker-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        self._server = self._listen()
        self.port = self._server.server_address[1]
        logger.info(
            "listening as %s on %s:%d (quiet time %.1f s, %d worker(s)); results to %s",
            self.ae_title, self.host, self.port, self.quiet_time, self.workers,
            " and ".join(str(x) for x in (self.destination, self.output_dir) if x is not None),
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Stop listening, let the workers finish the series they hold (up to ``timeout`` s), and return.

        Series not finished stay in the queue and are resumed by the next start.
        """
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stats = self._store_stats
        logger.info("stopped; %d instance(s) stored, %.1f ms per C-STORE on average, %.2f s at most",
                    stats["count"], 1000 * stats["seconds"] / max(1, stats["count"]), stats["max_seconds"])

    def serve_forever(self) -> None:
        """:meth:`start`, then block until SIGINT/SIGTERM, then :meth:`stop`."""
        import signal

        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        while not done.wait(1.0):
            pass
        logger.info("signal received: stopping")
        self.stop()

    # -- receiving ---------------------------------------------------------------------------------------------
    def _listen(self) -> Any:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.require_called_aet = True
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 120
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_RELEASED, self._on_association_end),
            (evt.EVT_ABORTED, self._on_association_end),
            (evt.EVT_CONN_CLOSE, self._on_association_end),
        ]
        return ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)

    def _on_store(self, event: Any) -> Any:
        """C-STORE handler: check the instance, store it durably, then acknowledge."""
        peer = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        sop_uid, begin = "?", time.perf_counter()
        try:
            if shutil.disk_usage(self.queue.root).free < self.min_free_mb * 1e6:
                raise InstanceRefused(f"less than {self.min_free_mb:.0f} MB free in {self.queue.root}", OUT_OF_RESOURCES)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    ds = event.dataset
                    ds.file_meta = event.file_meta
                    sop_uid = str(ds.get("SOPInstanceUID", "?"))
                    _ = ds.get("PixelData")  # parse the whole dataset now
                except Exception as e:  # noqa: BLE001 - any decoding failure means an unreadable dataset
                    raise InstanceRefused(f"unreadable dataset: {type(e).__name__}: {e}") from e
            ended = [str(w.message) for w in caught if "end of" in str(w.message).lower()]
            if ended:
                raise InstanceRefused(f"truncated dataset: {ended[0]}")
            check_instance(ds, str(event.context.transfer_syntax))
            self.queue.write_instance(event.encoded_dataset(), str(ds.SeriesInstanceUID), sop_uid,
                                      holder=id(event.assoc))
            seconds = time.perf_counter() - begin
            stats = self._store_stats
            stats["count"] += 1  # (+= on floats under the GIL: good enough for a statistic)
            stats["seconds"] += seconds
            stats["max_seconds"] = max(stats["max_seconds"], seconds)
            if seconds > SLOW_STORE_SECONDS:  # senders time out (Orthanc: DicomScuTimeout, 10 s by default)
                logger.warning("storing instance %s from %s took %.1f s", sop_uid, peer, seconds)
        except InstanceRefused as e:
            logger.warning("refused instance %s from %s (status 0x%04X): %s", sop_uid, peer, e.status, e)
            return _status(e.status, str(e))
        except Exception as e:  # noqa: BLE001 - never let one instance take the listener down
            logger.exception("failed to store instance %s from %s", sop_uid, peer)
            return _status(OUT_OF_RESOURCES, f"{type(e).__name__}: {e}")
        return SUCCESS

    def _on_association_end(self, event: Any) -> None:
        """An association was released, aborted or dropped: its series may become complete."""
        self.queue.release(id(event.assoc))

    # -- processing --------------------------------------------------------------------------------------------
    def _seal_loop(self) -> None:
        interval = min(0.5, max(0.05, self.quiet_time / 4))
        while not self._stop.wait(interval):
            try:
                for job_id in self.queue.seal_quiet(self.quiet_time):
                    logger.info("series complete, queued as %s", job_id)
            except Exception:  # noqa: BLE001 - keep sealing
                logger.exception("sealing complete series failed")

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            job = self.queue.claim(timeout=0.5)
            if job is None:
                continue
            try:
                self.process(job)
            except Exception:  # noqa: BLE001 - a bug here must not stop the worker
                logger.exception("unexpected failure on %s", job.job_id)

    def process(self, job: Job) -> None:
        """Process one claimed job: route, infer (unless an earlier run finished), deliver, record or quarantine."""
        from monai_kd.dicom_inference import check_series
        from monai_kd.io.dicom_series import load_dicom_series

        start = time.perf_counter()
        info: dict[str, Any] = {"series_uid": job.series_uid}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                series = load_dicom_series(job.path)
            info.update(study_uid=series.study_uid, modality=series.modality, description=series.description,
                        instances=len(series.files), shape=list(series.spatial_shape))
            route = match_route(self.routes, series.modality, series.description)
            if route is None:
                raise InstanceRefused(
                    f"no routing rule matches modality '{series.modality}', description '{series.description}'"
                )
            info.update(route=route.name, bundle=route.bundle)
            voxels = 1
            for size in series.spatial_shape:
                voxels *= int(size)
            if len(series.frames) > self.max_slices or voxels > self.max_voxels:
                raise InstanceRefused(
                    f"series too large: {len(series.frames)} slices, {voxels} voxels (limits {self.max_slices} "
                    f"slices, {self.max_voxels} voxels)"
                )
            predictor = self.predictors[(route.bundle, route.ckpt_file, route.overlay)]
            if job.has_results:
                logger.info("%s: delivering the results of an earlier run", job.job_id)
            else:
                shutil.rmtree(job.results, ignore_errors=True)
                check_series(series, predictor.task)
                predictor.predict(str(job.path), job.results, series=series, force=route.force)
                self.queue.mark_results_complete(job)
        except Exception as e:  # noqa: BLE001 - a bad series is quarantined, never fatal
            reason = str(e) if isinstance(e, InstanceRefused) else f"{type(e).__name__}: {e}"
            target = self.queue.quarantine(job, reason, info)
            logger.error("series %s quarantined (%s): %s", job.series_uid, target, reason)
            return
        files = job.result_files()
        try:
            delivered = self._deliver(files)
        except Exception as e:  # noqa: BLE001 - the result is kept; delivery is retried
            logger.error("%s: delivery failed, retrying in %.0f s: %s", job.job_id, self.retry_delay, e)
            self.queue.requeue(job, delay=self.retry_delay)
            return
        seconds = time.perf_counter() - start
        record = {**info, "outputs": [p.name for p in files], "delivered": delivered, "seconds": round(seconds, 3),
                  "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        self.queue.finish(job, record)
        logger.info("series %s done in %.1f s: %s -> %s", job.series_uid, seconds, [p.name for p in files], delivered)

    def _deliver(self, files: list[Path]) -> list[str]:
        """Write the results to the output folder and/or C-STORE them to the destination."""
        from monai_kd.io.atomic import atomic_paths

        delivered = []
        if self.output_dir is not None:
            targets = [self.output_dir / p.name for p in files]
            with atomic_paths(*targets) as temps:
                for path, temp in zip(files, temps, strict=True):
                    shutil.copyfile(path, temp)
            delivered.append(str(self.output_dir))
        dicom = [p for p in files if p.suffix == ".dcm"]
        if self.destination is not None and dicom:
            statuses = store_files(dicom, self.destination, calling_ae=self.ae_title)
            failed = [f"{p.name}: 0x{s:04X}" for p, s in zip(dicom, statuses, strict=True)
                      if s != SUCCESS and s not in STORED_WARNING]
            if failed:
                raise StoreError(f"{self.destination} refused {failed}")
            delivered.append(str(self.destination))
        return delivered


def _status(code: int, comment: str) -> Dataset:
    """A C-STORE response status with an *Error Comment* (LO, at most 64 characters)."""
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status

