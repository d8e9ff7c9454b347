"""A real PACS for the tests: Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on 127.0.0.1, with its own
temporary storage folder and configuration, started and stopped by the test.

Orthanc 1.10 has no bind-address option (it listens on all interfaces), so the configuration closes what it can:
``RemoteAccessAllowed: false`` refuses every HTTP request that does not come from the loopback interface, and the
DICOM server accepts C-STORE/C-ECHO only from the registered modalities (``DicomAlwaysAllow*: false``), checked
against their address, 127.0.0.1 (``DicomCheckModalityHost``). Every address configured here is 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from monai_kd.node.testing import free_port

SCANNER_AE = "CT_SCANNER"  # the calling AE title tests must use to C-STORE into Orthanc
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
# forward every complete image series (never the results: SEG/SR) to the node, as a PACS auto-routing rule does
FORWARD_LUA = """
function OnStableSeries(seriesId, tags, metadata)
  local modality = tags['Modality']
  if modality == 'CT' or modality == 'MR' then
    print('forwarding series ' .. seriesId .. ' (' .. modality .. ') to the node')
    RestApiPost('/modalities/node/store', '{"Resources": ["' .. seriesId .. '"], "Synchronous": false}')
  end
end
"""


def orthanc_executable() -> str:
    """Path of the Orthanc server; skips the test when Orthanc or its DICOMweb plugin is not installed."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    if exe is None or not DICOMWEB_PLUGIN.exists():
        pytest.skip("Orthanc not installed (Debian/Ubuntu: apt-get install orthanc orthanc-dicomweb; .ci/run does)")
    return exe


class Orthanc:
    """An Orthanc server in a temporary folder.

    Args:
        folder: its storage, index, configuration and log live here.
        node: ``(ae_title, port)`` of a node on 127.0.0.1 to register as modality ``node`` and forward complete
            CT/MR series to (``None``: no forwarding).
        stable_age: seconds without a new instance after which Orthanc calls a series stable.
    """

    def __init__(self, folder: Path, node: tuple[str, int] | None = None, stable_age: int = 2) -> None:
        self.folder = Path(folder)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.ae_title = "ORTHANC"
        self.node, self.stable_age = node, stable_age
        self.process: subprocess.Popen | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict[str, Any]:
        storage = self.folder / "storage"
        config: dict[str, Any] = {
            "Name": "monai_kd_test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
            "DicomCheckCalledAet": True,
            # who may send: the "scanner" of the tests (calling AE CT_SCANNER) and the node's results
            "DicomModalities": {"scanner": [SCANNER_AE, "127.0.0.1", 104]},
            "StableAge": self.stable_age,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.http_port}", "Ssl": False},
            "DicomScuTimeout": 60,
            "StorageCompression": False,
        }
        if self.node is not None:
            lua = self.folder / "forward.lua"
            lua.write_text(FORWARD_LUA)
            config["DicomModalities"]["node"] = [self.node[0], "127.0.0.1", self.node[1]]
            config["LuaScripts"] = [str(lua)]
        return config

    def start(self, timeout: float = 60.0) -> Orthanc:
        exe = orthanc_executable()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        self.log = open(self.folder / "orthanc.log", "w")
        self.process = subprocess.Popen([exe, str(path)], cwd=self.folder, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        if getattr(self, "log", None) is not None:
            self.log.close()

    def log_text(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST ----------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | str | None = None) -> bytes:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with self._opener.open(request, timeout=60) as response:
            return response.read()

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def find_series(self, modality: str, study_uid: str | None = None) -> list[dict]:
        """Series of a modality (optionally of one study), expanded."""
        query: dict[str, str] = {"Modality": modality}
        if study_uid:
            query["StudyInstanceUID"] = study_uid
        body = json.dumps({"Level": "Series", "Query": query, "Expand": True})
        return json.loads(self.request("POST", "/tools/find", body))

    def instance_file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")
