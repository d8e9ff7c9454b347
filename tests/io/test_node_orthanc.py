"""Round trips with a real PACS: Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) started by the test on
127.0.0.1 with its own storage folder and configuration, stopped after.

(a) the CT series is C-STOREd into Orthanc, Orthanc forwards the stable series to ``monai-kd serve`` (a Lua
auto-routing rule), the node C-STOREs the DICOM SEG back into Orthanc; (b) ``monai-kd infer-dicomweb`` pulls the
series from Orthanc's DICOMweb (WADO-RS) and stores the SEG back (STOW-RS). Each test then queries Orthanc for
the result and checks that it references the source series and instances, lies on the source geometry and
passes ``dciodvfy`` with zero errors. The model is the tiny freshly initialised segmentation bundle: the plumbing
is under test, not the masks.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pydicom
import pytest
from dicom_testdata import dciodvfy_errors, segmentation_bundle
from node_testdata import REPO, seg_problems, serve, wait_for
from orthanc_server import SCANNER_AE, Orthanc

pytest.importorskip("pynetdicom", reason="pip install pynetdicom (monai-kd[node]); .ci/run installs it")
pytest.importorskip("dicomweb_client", reason="pip install dicomweb-client (monai-kd[node]); .ci/run installs it")

from monai_kd.node import StoreError, parse_address, store_files  # noqa: E402
from monai_kd.node.testing import free_port, restamp_series  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:DICOM series in", "ignore:.*labels.*:FutureWarning")]
pytest_plugins = ["dicom_testdata"]


def _sent(files):
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return headers, str(headers[0].StudyInstanceUID), str(headers[0].SeriesInstanceUID)


def _seg_in_orthanc(pacs: Orthanc, study_uid: str, tmp_path) -> tuple[pydicom.Dataset, str]:
    """The one SEG instance Orthanc holds for the study (waits for it), and its file."""
    series = wait_for(lambda: pacs.find_series("SEG", study_uid), 300, "a SEG in Orthanc", interval=1.0)
    assert len(series) == 1 and len(series[0]["Instances"]) == 1, series
    path = tmp_path / "seg_from_orthanc.dcm"
    path.write_bytes(pacs.instance_file(series[0]["Instances"][0]))
    return pydicom.dcmread(io.BytesIO(path.read_bytes())), str(path)


def test_pacs_forwards_a_series_to_the_node_and_receives_the_seg(ct_dir, tmp_path):
    bundle = segmentation_bundle(tmp_path / "bundle")
    files = restamp_series(ct_dir, tmp_path / "ct")
    headers, study_uid, series_uid = _sent(files)
    node_port = free_port()
    with Orthanc(tmp_path / "orthanc", node=("MONAIKD", node_port), stable_age=2) as pacs:
        node = serve(tmp_path / "work", bundle, node_port, tmp_path / "serve.log", "--quiet_time", "2",
                     "--destination", pacs.address, "--modality", "CT")
        try:
            assert set(store_files(files, parse_address(pacs.address), calling_ae=SCANNER_AE)) == {0}
            seg, path = _seg_in_orthanc(pacs, study_uid, tmp_path)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(60)
        assert "forwarding series" in pacs.log_text()
        assert len(pacs.find_series("CT", study_uid)) == 1  # the source, untouched
    assert seg.Modality == "SEG" and seg.SeriesInstanceUID != series_uid
    assert seg_problems(seg, headers) == []
    assert dciodvfy_errors(path) == []
    records = [json.loads(p.read_text()) for p in (tmp_path / "work" / "done").glob("*.json")]
    assert [(r["series_uid"], r["delivered"]) for r in records] == [(series_uid, [pacs.address])]


def test_infer_dicomweb_pulls_from_orthanc_and_stores_the_seg_back(ct_dir, tmp_path):
    bundle = segmentation_bundle(tmp_path / "bundle")

    def deidentified(index, ds):  # as public data often is: flagged, without the method DICOM then requires
        ds.PatientIdentityRemoved = "YES"
        return ds

    files = restamp_series(ct_dir, tmp_path / "ct", edit=deidentified)
    headers, study_uid, series_uid = _sent(files)
    with Orthanc(tmp_path / "orthanc") as pacs:
        try:  # only registered modalities may store (Orthanc listens on every interface)
            assert store_files(files[:1], parse_address(pacs.address), calling_ae="STRANGER") != [0]
        except StoreError:
            pass
        assert pacs.get("/instances") == []
        assert set(store_files(files, parse_address(pacs.address), calling_ae=SCANNER_AE)) == {0}
        command = [sys.executable, "-m", "monai_kd.cli", "infer-dicomweb", "--url", pacs.dicomweb,
                   "--study", study_uid, "--series", series_uid, "--bundle", str(bundle),
                   "--segment_names", "['hepar','lien']"]  # the site's own names for the bundle's labels 1 and 2
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1"}
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout[result.stdout.index("{"):])
        assert summary["series_uid"] == series_uid and summary["instances"] == len(files)
        seg, path = _seg_in_orthanc(pacs, study_uid, tmp_path)
        assert summary["stored_sop_instance_uids"] == [str(seg.SOPInstanceUID)]

        from dicomweb_client.api import DICOMwebClient

        from monai_kd.node.dicomweb import choose_series

        found = DICOMwebClient(pacs.dicomweb).search_for_series(study_instance_uid=study_uid)
        assert len(found) == 2 and choose_series(found) == series_uid  # the SEG is not an input candidate
    assert seg_problems(seg, headers) == []
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["hepar", "lien"]  # not the bundle's liver / spleen
    assert seg.PatientIdentityRemoved == "YES" and seg.DeidentificationMethod  # filled, honestly
    assert dciodvfy_errors(path) == []
