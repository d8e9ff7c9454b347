"""``monai-kd serve``: the on-disk queue, routing rules, refusal of malformed instances, and kill -9 mid-series.

The node runs the tiny freshly initialised segmentation bundle of :mod:`dicom_testdata` (wiring, not accuracy) on
copies of the real CT series with new UIDs; results go to an output folder and to a receiving storage SCP. Every
server listens on 127.0.0.1 on a port chosen free at test time.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from dicom_testdata import KD_BUNDLE, dciodvfy_errors, pydicom_file, segmentation_bundle
from node_testdata import seg_problems, serve, wait_for

pytest.importorskip("pynetdicom", reason="pip install pynetdicom (monai-kd[node]); .ci/run installs it")

from monai_kd.node import RoutingError, WorkQueue, load_routes, match_route, parse_address, store_files  # noqa: E402
from monai_kd.node.testing import StorageCollector, free_port, restamp_series  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:DICOM series in", "ignore:.*labels.*:FutureWarning", "ignore:Invalid")
pytest_plugins = ["dicom_testdata"]


# -- queue and routing (no network) -------------------------------------------------------------------------------
def test_queue_survives_a_crash_at_every_state(tmp_path):
    queue = WorkQueue(tmp_path / "work", fsync=False)
    for series in ("1.2.3", "1.2.4"):
        for sop in ("1", "2"):
            queue.write_instance(b"DICM" + sop.encode(), series, f"{series}.{sop}")
    queue.write_instance(b"again", "1.2.3", "1.2.3.1")  # a resent instance replaces the copy, no duplicate
    assert sorted(p.name for p in (tmp_path / "work" / "incoming" / "1.2.3").iterdir()) == ["1.2.3.1.dcm", "1.2.3.2.dcm"]
    assert queue.seal_quiet(60.0) == []  # still within the quiet time
    sealed = queue.seal_quiet(0.0)
    assert [s.split("-", 1)[1] for s in sealed] == ["1.2.3", "1.2.4"] and queue.incoming_series() == []
    first, second = queue.claim(), queue.claim()
    assert (first.series_uid, second.series_uid) == ("1.2.3", "1.2.4") and queue.claim(timeout=0.01) is None
    first.results.mkdir()
    (first.results / "1.2.3.seg.dcm").write_bytes(b"result")
    queue.mark_results_complete(first)
    queue.write_instance(b"x", "1.2.5", "1.2.5.1")  # a series still arriving at the crash
    (tmp_path / "work" / "tmp" / "partial.dcm").write_bytes(b"never acknowledged")

    restarted = WorkQueue(tmp_path / "work", fsync=False)  # "kill -9": only the folders remain
    counts = restarted.recover()
    assert counts == {"requeued": 2, "already_done": 0, "incoming": 1, "queued": 2}
    assert list((tmp_path / "work" / "tmp").iterdir()) == []
    assert restarted.seal_quiet(30.0) == []  # the incoming series waits a full quiet time from the restart
    again = restarted.claim()
    assert again.job_id == first.job_id and again.has_results  # delivered again, not recomputed
    assert [p.name for p in again.result_files()] == ["1.2.3.seg.dcm"]
    restarted.finish(again, {"outputs": ["1.2.3.seg.dcm"]})
    other = restarted.claim()
    restarted.quarantine(other, "mixed image orientations")
    assert [r["job_id"] for r in restarted.done_records()] == [first.job_id]
    assert [r["reason"] for r in restarted.quarantine_records()] == ["mixed image orientations"]
    assert (tmp_path / "work" / "quarantine" / other.job_id / "1.2.4.1.dcm").is_file()  # kept for inspection
    assert not first.path.exists() and not first.results.exists()
    # a crash after the done record was written but before the folders were removed: not processed twice
    restarted.seal_quiet(0.0)
    late = restarted.claim()
    (tmp_path / "work" / "done" / f"{late.job_id}.json").write_text("{}")
    assert WorkQueue(tmp_path / "work").recover()["already_done"] == 1


def test_a_series_is_not_complete_while_its_association_is_open(tmp_path):
    queue = WorkQueue(tmp_path / "work", fsync=False)
    queue.write_instance(b"x", "1.2.3", "1.2.3.1", holder="association 1")
    queue.write_instance(b"x", "1.2.3", "1.2.3.2", holder="association 2")
    assert queue.seal_quiet(0.0) == []  # the sender stalls mid-series: not complete
    queue.release("association 1")
    assert queue.seal_quiet(0.0) == []  # another association still sends to it
    queue.release("association 2")
    assert queue.seal_quiet(0.2) == []  # the quiet time starts when the last association ended
    time.sleep(0.2)
    assert len(queue.seal_quiet(0.2)) == 1
    queue.write_instance(b"x", "1.2.4", "1.2.4.1", holder="idle association")
    time.sleep(0.1)
    assert len(queue.seal_quiet(0.0, hold_limit=0.05)) == 1  # an idle association held open does not block it


def test_a_requeued_job_waits_its_retry_delay(tmp_path):
    queue = WorkQueue(tmp_path / "work", fsync=False)
    queue.write_instance(b"x", "1.2.3", "1.2.3.1")
    queue.seal_quiet(0.0)
    job = queue.claim()
    queue.requeue(job, delay=0.3)
    assert queue.queued() == [job.job_id] and queue.claim(timeout=0.01) is None  # not due yet
    time.sleep(0.3)
    assert queue.claim(timeout=0.01).job_id == job.job_id


def test_routing_rules(tmp_path):
    ct, mr = segmentation_bundle(tmp_path / "ct"), segmentation_bundle(tmp_path / "mr")
    rules = tmp_path / "routes.json"
    rules.write_text(
        '{"routes": [{"name": "flair", "bundle": "mr", "modality": ["MR"], "description": "flair|t2"},'
        ' {"name": "ct", "bundle": "ct", "modality": "ct"}]}'
    )
    routes = load_routes(rules)
    assert [r.bundle for r in routes] == [str(mr), str(ct)]  # relative to the rules file
    assert match_route(routes, "MR", "AX FLAIR fs").name == "flair"
    assert match_route(routes, "ct", "anything").name == "ct"
    assert match_route(routes, "MR", "T1 post") is None
    with pytest.raises(RoutingError, match="is not a bundle"):
        load_routes([{"bundle": str(tmp_path / "missing")}])
    with pytest.raises(RoutingError, match="unknown key"):
        load_routes([{"bundle": str(ct), "modalty": "CT"}])
    with pytest.raises(ValueError, match="AE_TITLE@host:port"):
        parse_address("127.0.0.1:104")


# -- a running node (in-process) ----------------------------------------------------------------------------------
@pytest.fixture
def node(tmp_path):
    """A node on a free loopback port with the tiny CT bundle (CT only), quiet time 1 s, two workers sharing the
    loaded model, results to a folder and to a receiving SCP."""
    from monai_kd.node.server import DicomNode

    bundle = segmentation_bundle(tmp_path / "bundle")
    collector = StorageCollector(tmp_path / "received").start()
    node = DicomNode(
        tmp_path / "work", load_routes([{"name": "ct", "bundle": str(bundle), "modality": "CT"}]), port=0,
        quiet_time=1.0, workers=2, destination=parse_address(collector.address), output_dir=tmp_path / "out",
        fsync=False, min_free_mb=50,
    )
    node.start()
    node.collector = collector
    node.address = parse_address(f"MONAIKD@127.0.0.1:{node.port}")
    yield node
    node.stop()
    collector.stop()


def _with_syntax(path: Path, syntax: str) -> Path:
    """The file as if encoded in another transfer syntax (header only: a sender claiming it)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    out = path.with_name(path.stem + "_syntax.dcm")
    ds.save_as(out, enforce_file_format=True)
    return out


def test_node_refuses_malformed_instances_and_keeps_serving(node, ct_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="monai_kd.node")
    good = restamp_series(ct_dir, tmp_path / "good")
    study = str(pydicom.dcmread(good[0]).StudyInstanceUID)

    def tilt(index, ds):
        if index == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43588989]
        return ds

    mixed = restamp_series(ct_dir, tmp_path / "mixed", study_uid=study, edit=tilt)
    truncated = [Path(pydicom_file("MR_truncated.dcm"))]  # pixel data 62 bytes short
    jpeg_lossless = _with_syntax(good[0], "1.2.840.10008.1.2.4.70")  # JPEG Lossless SV1: no decoder installed
    report = Path(pydicom_file("test-SR.dcm"))

    assert store_files(truncated, node.address) == [0xC000]
    assert store_files([jpeg_lossless], node.address) == [0xC000]
    assert store_files([report], node.address) == [0xA900]
    assert set(store_files(mixed, node.address)) == {0}  # each instance is fine; the series is not
    assert set(store_files(good, node.address)) == {0}  # the listener still serves

    wait_for(lambda: len(list(node.queue.done_records())) + len(list(node.queue.quarantine_records())) == 2
             and node.queue.idle(), 120, "both series to be processed")
    refusals = "\n".join(r.getMessage() for r in caplog.records)
    assert "truncated pixel data" in refusals
    assert "unsupported transfer syntax JPEG Lossless" in refusals
    assert "not an image: SR (Comprehensive SR Storage)" in refusals
    (quarantined,) = node.queue.quarantine_records()
    assert quarantined["series_uid"] == str(pydicom.dcmread(mixed[0]).SeriesInstanceUID)
    assert "mixed image orientations" in quarantined["reason"] and "quarantined" in refusals
    (done,) = node.queue.done_records()
    good_series = str(pydicom.dcmread(good[0]).SeriesInstanceUID)
    assert done["series_uid"] == good_series and done["route"] == "ct"
    (seg_file,) = sorted((tmp_path / "out").iterdir())
    assert seg_file.name == f"{good_series}.seg.dcm"
    assert [source for _, _, source in node.collector.received] == [good_series]
    assert seg_problems(pydicom.dcmread(seg_file), [pydicom.dcmread(f, stop_before_pixels=True) for f in good]) == []
    assert dciodvfy_errors(seg_file) == []
    node.min_free_mb = 1e12  # a full disk: refused as Out of Resources (the sender retries later), nothing stored
    assert store_files(good[:1], node.address) == [0xA700] and node.queue.incoming_series() == []


def test_unrouted_series_is_quarantined(node, tmp_path):
    mr = [Path(pydicom_file("MR_small.dcm"))]
    assert mr and set(store_files(mr, node.address)) == {0}
    wait_for(lambda: list(node.queue.quarantine_records()), 60, "the MR series to be quarantined")
    (record,) = node.queue.quarantine_records()
    assert "no routing rule matches modality 'MR'" in record["reason"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- kill -9 mid-series (the real command in a subprocess) --------------------------------------------------------
def _open_association(files, address):
    """An association able to send ``files``, left open for the test to use."""
    from pynetdicom import AE, build_context

    ae = AE(ae_title="MODALITY")
    for f in files[:1]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ae.requested_contexts.append(build_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title)
    assert assoc.is_established
    return assoc


@pytest.mark.slow
def test_kill_9_mid_series_every_series_gets_exactly_one_result(ct_dir, tmp_path):
    bundle = segmentation_bundle(tmp_path / "bundle")
    work, out, log = tmp_path / "work", tmp_path / "out", tmp_path / "serve.log"
    a = restamp_series(ct_dir, tmp_path / "a")
    b = restamp_series(ct_dir, tmp_path / "b")
    series = {str(pydicom.dcmread(files[0]).SeriesInstanceUID): files for files in (a, b)}
    port = free_port()
    address = parse_address(f"MONAIKD@127.0.0.1:{port}")
    with StorageCollector(tmp_path / "received") as collector:
        options = ("--quiet_time", "5", "--output_dir", str(out), "--destination", collector.address)
        process = serve(work, bundle, port, log, *options)
        sender = _open_association(b, address)  # B is half received, its association still open ...
        assert [int(sender.send_c_store(pydicom.dcmread(f)).Status) for f in b[:10]] == [0] * 10
        assert set(store_files(a, address)) == {0}
        wait_for(lambda: any((work / "active").iterdir()), 60, "series A to be processed", interval=0.02)
        os.kill(process.pid, signal.SIGKILL)  # ... when the node dies, A in the middle of its inference
        process.wait(30)
        sender.abort()
        assert not any(out.glob("*.seg.dcm")) and collector.received == []
        assert len(list((work / "incoming").iterdir())) == 1 and len(list((work / "active").iterdir())) == 1

        process = serve(work, bundle, port, log, *options)
        try:
            assert set(store_files(b, address)) == {0}  # the sender retries the whole series
            wait_for(lambda: len(list(work.glob("done/*.json"))) == 2 and not any((work / "incoming").iterdir())
                     and not any((work / "active").iterdir()), 240, "both results", interval=0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    text = log.read_text()
    assert "1 interrupted series requeued" in text and "1 still incoming" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{uid}.seg.dcm" for uid in series)
    per_source = Counter(source for _, _, source in collector.received)
    assert per_source == Counter({uid: 1 for uid in series}), collector.received  # exactly one result each
    assert list(work.glob("quarantine/*.json")) == []
    for uid, files in series.items():
        seg = pydicom.dcmread(out / f"{uid}.seg.dcm")
        assert seg_problems(seg, [pydicom.dcmread(f, stop_before_pixels=True) for f in files]) == []
        assert int(seg.NumberOfFrames) == 2 * len(files)  # all 20 slices of B, not the 10 received before the kill


def test_delivery_is_retried_until_the_destination_answers(ct_dir, tmp_path, caplog):
    """The PACS is down when the result is ready: the result is kept and delivered once it is back."""
    from monai_kd.node.server import DicomNode

    caplog.set_level(logging.INFO, logger="monai_kd.node")
    port = free_port()
    node = DicomNode(tmp_path / "work", load_routes([{"bundle": str(segmentation_bundle(tmp_path / "bundle"))}]),
                     port=0, quiet_time=0.5, destination=parse_address(f"PACS@127.0.0.1:{port}"), retry_delay=0.5,
                     fsync=False, min_free_mb=50)
    node.start()
    try:
        files = restamp_series(ct_dir, tmp_path / "ct")
        assert set(store_files(files, parse_address(f"MONAIKD@127.0.0.1:{node.port}"))) == {0}
        wait_for(lambda: "delivery failed" in caplog.text, 120, "a failed delivery")
        assert list(node.queue.done_records()) == [] and list(node.queue.quarantine_records()) == []
        with StorageCollector(tmp_path / "received", ae_title="PACS", port=port) as pacs:
            wait_for(lambda: list(node.queue.done_records()), 60, "the delivery after the PACS came back")
    finally:
        node.stop()
    assert [source for _, _, source in pacs.received] == [str(pydicom.dcmread(files[0]).SeriesInstanceUID)]
    assert "delivering the results of an earlier run" in caplog.text  # computed once, the kept result re-sent


def test_serve_needs_one_bundle_or_routes(tmp_path):
    from monai_kd import cli
    from monai_kd.bundle_utils import BundleError

    with pytest.raises(BundleError, match="either --bundle .* or --routes"):
        cli.serve(str(tmp_path / "work"))
    bundle = segmentation_bundle(tmp_path / "bundle")
    with pytest.raises(BundleError, match="either --bundle"):
        cli.serve(str(tmp_path / "work"), bundle=str(bundle), routes=str(tmp_path / "routes.json"))
    with pytest.raises(ValueError, match="destination AE and/or an output folder"):
        cli.serve(str(tmp_path / "work"), bundle=str(bundle))


def test_series_are_routed_by_description_to_their_bundles(ct_dir, kd_checkpoint, tmp_path, monkeypatch):
    """Two CT series, told apart by Series Description: one to the segmentation bundle (SEG), one to the kd
    classifier (SR); both models are loaded once at start-up and reused."""
    from monai_kd.dicom_inference import BundlePredictor
    from monai_kd.node.server import DicomNode

    routes = load_routes([
        {"name": "organs", "bundle": str(segmentation_bundle(tmp_path / "bundle")), "modality": "CT",
         "description": "body"},
        {"name": "chest", "bundle": str(KD_BUNDLE), "ckpt_file": str(kd_checkpoint), "modality": "CT",
         "description": "^chest", "force": True},  # a CT series is outside the chest X-ray classifier's contract
    ])
    node = DicomNode(tmp_path / "work", routes, port=0, quiet_time=0.5, output_dir=tmp_path / "out", fsync=False,
                     min_free_mb=50)
    node.start()

    def no_second_load(*args, **kwargs):
        raise AssertionError("a model was loaded again for a series")

    monkeypatch.setattr(BundlePredictor, "__init__", no_second_load)
    try:
        body = restamp_series(ct_dir, tmp_path / "body")
        chest = restamp_series(ct_dir, tmp_path / "chest", description="Chest 3.0")
        address = parse_address(f"MONAIKD@127.0.0.1:{node.port}")
        assert set(store_files(body, address)) == {0} and set(store_files(chest, address)) == {0}
        wait_for(lambda: len(list(node.queue.done_records())) == 2, 120, "both series")
    finally:
        node.stop()
    records = {r["series_uid"]: r for r in node.queue.done_records()}
    body_uid, chest_uid = (str(pydicom.dcmread(files[0]).SeriesInstanceUID) for files in (body, chest))
    assert records[body_uid]["route"] == "organs" and records[chest_uid]["route"] == "chest"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{body_uid}.seg.dcm", f"{chest_uid}.sr.dcm", f"{chest_uid}.classification.json"])
    assert pydicom.dcmread(tmp_path / "out" / f"{chest_uid}.sr.dcm").Modality == "SR"
    for name in (f"{body_uid}.seg.dcm", f"{chest_uid}.sr.dcm"):
        assert dciodvfy_errors(tmp_path / "out" / name) == []


def test_store_files_resends_after_a_lost_response(ct_dir, tmp_path, caplog):
    """A C-STORE response that never comes (a stalled receiver, or pynetdicom's reactor taking it): the rest is
    sent again in a new association, and every instance ends up stored."""
    files = restamp_series(ct_dir, tmp_path / "ct")[:4]

    class Stalling(StorageCollector):
        stalled = False

        def _on_store(self, event):
            status = super()._on_store(event)
            if len(self.received) == 2 and not self.stalled:
                type(self).stalled = True
                time.sleep(2.5)  # longer than the sender's timeout: no response in time
            return status

    with Stalling(tmp_path / "received") as receiver:
        assert store_files(files, parse_address(receiver.address), timeout=1.0) == [0, 0, 0, 0]
        time.sleep(0.5)
    sent = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    assert [sop for sop, _, _ in receiver.received] == sent[:2] + sent[1:]  # the 2nd was sent twice, stored once
    assert sorted(p.stem for p in (tmp_path / "received").iterdir()) == sorted(sent)
    assert "sending the remaining 3 file(s) again" in caplog.text
