#!/usr/bin/env python
"""Check that monai_kd bundles work in MONAI Label: serve them, infer over HTTP, train with MONAI Label's trainer.

Run with the MONAI Label virtualenv (``bash scripts/monailabel/setup_venv.sh`` creates it)::

    .venv-monailabel/bin/python scripts/monailabel/check_server.py                 # bundles kd, kdml_seg, emtkd
    .venv-monailabel/bin/python scripts/monailabel/check_server.py --bundles kd --weights kd=path/to/model.pt

What it does, all offline and on 127.0.0.1 only:

1. ``monailabel apps --download --name monaibundle`` copies MONAI Label's own sample app out of the installed
   package (the sample apps ship inside the ``monailabel`` wheel; nothing is fetched).
   Its ``main.py`` gets a small patch (:data:`APP_PATCH`, printed as a check; ``--unpatched_app`` skips it):
   as shipped, MONAI Label 0.8.5's ``BundleInferTask`` cannot serve a classification bundle (it appends a
   ``Restored`` resize to the class vector, and takes the infer type from the folder name), with MONAI
   1.6.1, fails in ``Spacingd`` on its own ``image_path`` request entry, and cannot write the label map of a 2D
   photograph (float labels with a channel axis, which ITK's PNG writer refuses or writes as a 1-pixel column).
2. Each bundle is copied into ``<app>/model/<name>`` -- a *local* bundle, so with ``--conf zoo_source local``
   (and ``MONAI_ZOO_SOURCE=local``) MONAI Label does not contact the model zoo. Weights: ``--weights NAME=PATH``,
   else the bundle's ``models/model.pt``, else a freshly initialised ``network_def`` (seed 0).
3. A studies folder gets real images: PneumoniaMNIST test images as PNG (classification bundles trained on a
   MedMNIST ``.npz``), a BraTS FLAIR test volume as NIfTI (segmentation bundles trained on BraTS), the first
   AV-WIDE test person's colour fundus photograph as PNG (``emtkd``'s retinal-vessel student, target domain).
4. ``monailabel start_server --app APP --studies STUDIES --host 127.0.0.1 --port PORT --conf models ...
   --conf zoo_source local --conf sam2 false`` starts in its own process group; ``/info/`` is polled until the
   models are listed (bounded by ``--timeout``).
5. ``POST /infer/<model>`` for every image (by datastore id, and one upload): a classification must come back
   as MONAI Label's ``prediction`` list (one entry per class, scores summing to 1) and match the bundle's own
   ``inference.json`` pipeline run here; a segmentation must come back as a NIfTI label map on the input grid
   (a label image of the photograph's rows x columns for a 2D photograph), with the bundle's label values,
   matching the bundle's own ``inference.json`` pipeline run here.
6. The server is stopped (SIGTERM, then SIGKILL, to the whole process group) in all cases.
7. MONAI Label's training entry, :class:`monailabel.tasks.train.bundle.BundleTrainTask`, runs on each bundle's
   ``train.json`` for one epoch on a few real training items (the bundle's own ``train_datalist``, given as a
   MONAI Label datastore), with MONAI Label's overrides ``train#dataset#data``, ``validate#dataset#data``,
   ``train#trainer#max_epochs``, ``train#handlers`` (plus the CheckpointLoader it inserts), ``device`` and
   ``bundle_root``. The trainer must run exactly one epoch and write a new ``models/model.pt`` that loads into
   ``network_def``. It trains a copy (``<work>/train/<model>``): with ``--work_dir DIR`` the patched app
   ``DIR/monaibundle`` (bundles and weights in ``model/``) is left ready for ``monailabel start_server``.
   BraTS segmentation bundles are trained a second time the way Slicer's *Train* button does it: from datastore
   items that are image/label *file paths* (BraTS FLAIR volumes and their label maps of the train and validation
   subjects), which the bundle's ``VolumeSliceDataset`` slices itself. (``emtkd``'s retinal items already are
   image/label file paths, of photographs and vessel masks, as MONAI Label's datastore lists them; its student
   trains with its frozen teachers' checkpoints, fresh when ``bundles/emtkd/models`` has none.)

Prints one PASS/FAIL line per check and a summary; exits 1 if any check failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MONAI_KD_DATA", REPO.parent / "shared" / "data"))
DEFAULT_BUNDLES = ("kd", "kdml_seg", "emtkd")
HOST = "127.0.0.1"  # the only address this script talks to
# network_data_format.outputs.pred.format -> task (the rule of monai_kd.dicom_inference.TASKS)
TASKS = {"classes": "classification", "probabilities": "classification", "labels": "segmentation",
         "segmentation": "segmentation"}


# ----------------------------------------------------------------------------------------------------- reporting
@dataclass
class Report:
    """PASS/FAIL lines, printed as they come."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def check(self, name: str, fn: Callable[[], str]) -> bool:
        """Run ``fn`` (returns a detail string; raises on failure) as one check."""
        try:
            return self.add(name, True, fn())
        except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
            detail = f"{type(e).__name__}: {e}"
            if os.environ.get("CHECK_SERVER_DEBUG"):
                traceback.print_exc()
            return self.add(name, False, detail)

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.results if not ok]

    def summary(self) -> str:
        n_pass = sum(ok for _, ok, _ in self.results)
        lines = ["", "=" * 78, "MONAI Label check summary", "=" * 78]
        lines += [f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok, _ in self.results]
        verdict = "PASS" if not self.failed and self.results else "FAIL"
        lines += ["-" * 78, f"{verdict}: {n_pass} passed, {len(self.results) - n_pass} failed"]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ bundles
@dataclass
class Bundle:
    """One of our bundles, as served by MONAI Label."""

    name: str  # folder name in bundles/
    source: Path
    task: str  # classification | segmentation
    model: str  # model name in MONAI Label (the folder name under <app>/model)
    meta: dict
    weights: str = ""  # where models/model.pt came from
    samples: list[dict] = field(default_factory=list)  # {"id", "path", "label"}


def _task(meta: dict) -> str:
    fmt = meta["network_data_format"]["outputs"]["pred"]["format"]
    if fmt not in TASKS:
        raise ValueError(f"output format '{fmt}' is neither classification nor segmentation")
    return TASKS[fmt]


def _config(bundle: Path, name: str) -> dict:
    with open(bundle / "configs" / name) as f:
        return json.load(f)


def _resolve_dataset_dir(bundle_src: Path) -> Path | None:
    """The bundle's ``dataset_dir`` (train.json), resolved like the README's commands run it: from the repo root."""
    value = _config(bundle_src, "train.json").get("dataset_dir")
    if not isinstance(value, str) or value.startswith(("$", "@")):
        return None
    path = Path(value)
    return path if path.is_absolute() else (REPO / path).resolve()


def _fresh_state(config: dict, key: str, bundle_root: Path) -> dict:
    """state_dict of a freshly initialised ``key`` network of a bundle config (seed 0)."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    parser["bundle_root"] = str(bundle_root)
    torch.manual_seed(0)
    return parser.get_parsed_content(key).state_dict()


def install_bundle(name: str, app: Path, weights: dict[str, str], teachers: dict[str, str],
                   name_by_task: bool = False) -> Bundle:
    """Copy ``bundles/<name>`` into ``<app>/model/<model>`` with ``models/model.pt`` (and ``teacher.pt``).

    ``name_by_task``: serve a classification bundle as ``<name>_classification`` (the unpatched sample app takes
    the infer type from the folder name)."""
    import torch

    src = REPO / "bundles" / name
    meta = _config(src, "metadata.json")
    task = _task(meta)
    suffix = name_by_task and task == "classification" and "classification" not in name
    model = f"{name}_classification" if suffix else name
    dst = app / "model" / model
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("models", "eval", "logs", "runs", "__pycache__"))
    (dst / "models").mkdir()
    bundle = Bundle(name=name, source=src, task=task, model=model, meta=meta)
    for file, given, key, config in (
        ("model.pt", weights.get(name), "network_def", "inference.json"),
        ("teacher.pt", teachers.get(name), "teacher_def", "train.json"),
    ):
        own = src / "models" / file
        if given:
            shutil.copyfile(given, dst / "models" / file)
            origin = f"trained ({given})"
        elif own.is_file():
            shutil.copyfile(own, dst / "models" / file)
            origin = f"trained ({own.relative_to(REPO)})"
        elif key in _config(src, config):
            torch.save(_fresh_state(_config(src, config), key, dst), dst / "models" / file)
            origin = "freshly initialised (seed 0)"
        else:
            continue
        if file == "model.pt":
            bundle.weights = origin
    _install_teacher_ckpts(src, dst, teachers.get(name))
    return bundle


def _install_teacher_ckpts(src: Path, dst: Path, given: str | None) -> None:
    """Multi-teacher bundles (``emtkd``): every file of ``train.json``'s ``teacher_ckpts`` that the student's training
    loads (``PretrainedLoader``), copied from ``bundles/<name>/models`` when trained there, else a freshly
    initialised ``teacher_networks[<teacher>]`` (seed 0). ``given`` (``--teacher``) is not split per teacher."""
    import torch
    from monai.bundle import ConfigParser

    config = _config(src, "train.json")
    if "teacher_ckpts" not in config or "teacher_networks" not in config or given:
        return
    parser = ConfigParser(config)
    parser["bundle_root"] = str(dst)
    for name, path in parser.get_parsed_content("teacher_ckpts").items():
        own = src / "models" / Path(path).name
        if Path(path).is_file():
            continue
        if own.is_file():
            shutil.copyfile(own, path)
            continue
        torch.manual_seed(0)
        torch.save(parser.get_parsed_content(f"teacher_networks#{name}").state_dict(), path)


def venv_env(**extra: str) -> dict[str, str]:
    """The environment of an activated virtualenv: the ``monailabel`` launcher (a bash script) runs
    ``${MONAILABEL_PYEXE:-python}``, i.e. whatever ``python`` is first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "VIRTUAL_ENV": sys.prefix,
            "MONAILABEL_PYEXE": sys.executable, **extra}


def copy_sample_app(work: Path) -> str:
    """``monailabel apps --download --name monaibundle --output WORK``: a copy of the app shipped in the package."""
    cli = Path(sys.executable).with_name("monailabel")
    cmd = [str(cli), "apps", "--download", "--name", "monaibundle", "--output", str(work)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=venv_env())
    app = work / "monaibundle"
    if result.returncode != 0 or not (app / "main.py").is_file():
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}: {(result.stdout + result.stderr)[-500:]}")
    return f"{app} ({' '.join(cmd[1:5])})"


# The sample app's one line that creates the infer task of a (non-DeepEdit) bundle, and its replacement.
SAMPLE_INFER_LINE = "                i = BundleInferTask(b, self.conf)\n"
PATCHED_INFER_LINE = "                i = _monai_kd_infer_task(b, self.conf)  # monai_kd patch, see the end of this file\n"
APP_PATCH = '''

# ---- monai_kd patch (applied by scripts/monailabel/check_server.py; the rest of this file is MONAI Label's) ----
# Two incompatibilities of MONAI Label 0.8.5's BundleInferTask with monai_kd's bundles (MONAI 1.6.1):
# 1. It appends its `Restored` post-transform to every non-detection bundle, which fails on a class vector
#    ("operands could not be broadcast together with shapes (0,) (2,)"), and it takes the infer type from the
#    folder name ("...classification..."). Classification bundles (metadata outputs.pred.format "classes" or
#    "probabilities") get type=classification and no `Restored`.
# 2. MONAI 1.6's Spacingd updates every "image_*" entry of the data as a metadata dict; MONAI Label puts the
#    request's file name in "image_path" (a str): "'str' object has no attribute 'update'". The entry is set
#    aside while the bundle's preprocessing runs.
# 3. A label map is written with the image's extension; for a 2D photograph (PNG) ITK then refuses MONAI's float
#    labels ("PNG supports unsigned char and unsigned short"). Segmentation results are written as uint8 label
#    values (uint16 beyond 255 labels) unless the request asks for another `result_dtype`; and a 2D label map
#    keeps its channel axis through `Restored` (it squeezes 4D results only), which ITK would write as a
#    (columns x 1) image: the channel is dropped when the input image is 2D.
import json as _json


class _MonaiKdBundleInferTask(BundleInferTask):
    def run_pre_transforms(self, data, transforms):
        image_path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if image_path is not None:
            data["image_path"] = image_path
        return data

    def writer(self, data, extension=None, dtype=None):
        if self.type == InferType.SEGMENTATION:
            if dtype is None and not data.get("result_dtype"):
                dtype = "uint8" if len(self.labels or {}) < 256 else "uint16"
            pred, image = data.get(self.output_label_key), data.get(self.input_key)
            spatial = getattr(image, "meta", {}).get("spatial_shape", ())
            if pred is not None and len(spatial) == 2 and pred.ndim == 3 and pred.shape[0] == 1:
                data[self.output_label_key] = pred[0]
        return super().writer(data, extension=extension, dtype=dtype)


def _monai_kd_infer_task(path, conf):
    with open(os.path.join(path, "configs", "metadata.json")) as f:
        fmt = _json.load(f)["network_data_format"]["outputs"]["pred"].get("format")
    if fmt in ("classes", "probabilities"):
        return _MonaiKdBundleInferTask(path, conf, type=InferType.CLASSIFICATION, add_post_restore=False)
    return _MonaiKdBundleInferTask(path, conf)
'''


def patch_sample_app(app: Path) -> str:
    """Apply :data:`APP_PATCH` to the copied sample app's ``main.py`` (refused if MONAI Label's code differs)."""
    main_py = app / "main.py"
    text = main_py.read_text()
    if text.count(SAMPLE_INFER_LINE) != 1:
        raise RuntimeError(f"{main_py}: the line {SAMPLE_INFER_LINE.strip()!r} is not there exactly once; this "
                           "script knows MONAI Label 0.8.5's monaibundle app")
    main_py.write_text(text.replace(SAMPLE_INFER_LINE, PATCHED_INFER_LINE) + APP_PATCH)
    return (f"{main_py}: non-DeepEdit bundles -> _monai_kd_infer_task (classification: type=classification, no "
            "Restored; all: 'image_path' set aside during preprocessing; segmentation written as uint8 labels)")


# ------------------------------------------------------------------------------------------------------ samples
def add_samples(bundle: Bundle, studies: Path) -> None:
    """Write real test images for the bundle into the studies folder (datastore ids = file names sans suffix)."""
    dataset = _resolve_dataset_dir(bundle.source)
    if dataset is None or not dataset.exists():
        raise FileNotFoundError(f"bundle '{bundle.name}': dataset_dir of train.json not found ({dataset})")
    npz = sorted(dataset.glob("*.npz")) if dataset.is_dir() else []
    if bundle.task == "classification" and npz:
        from PIL import Image

        archive = np.load(npz[0])
        images, labels = archive["test_images"], archive["test_labels"].reshape(-1)
        if images.ndim != 3:
            raise ValueError(f"{npz[0]}: test_images of shape {images.shape} are not 2D grey images")
        for label in sorted({int(v) for v in labels})[:2]:
            index = int(np.flatnonzero(labels == label)[0])
            sample_id = f"{bundle.name}_{npz[0].stem}_test{index:04d}_label{label}"
            path = studies / f"{sample_id}.png"
            Image.fromarray(images[index]).save(path)
            bundle.samples.append({"id": sample_id, "path": path, "label": label})
        return
    if bundle.task == "segmentation" and (dataset / "splits.json").is_file():  # retinal-vessels (emtkd)
        from monai_kd.data.retinal import retinal_datalist

        item = retinal_datalist(dataset)["test"][0]  # a target-domain (AV-WIDE) test person's colour photograph
        image = Path(item["image"])
        sample_id = f"{bundle.name}_{item['domain']}_{image.stem}"
        path = studies / f"{sample_id}{image.suffix}"
        shutil.copyfile(image, path)
        bundle.samples.append({"id": sample_id, "path": path, "label": Path(item["label"])})
        return
    if bundle.task == "segmentation" and (dataset / "test").is_dir():
        contrast = str(_config(bundle.source, "train.json").get("contrast", "flair")).lower()
        names = {"flair": "Flair_subtrMeanDivStd.nii.gz", "t1c": "T1c_subtrMeanDivStd.nii.gz"}
        subject = min(p for p in (dataset / "test").iterdir() if (p / names[contrast]).is_file())
        sample_id = f"{bundle.name}_{subject.name}_{contrast}"
        path = studies / f"{sample_id}.nii.gz"
        shutil.copyfile(subject / names[contrast], path)
        truth = subject / "OTMultiClass.nii.gz"
        bundle.samples.append({"id": sample_id, "path": path, "label": truth if truth.is_file() else None})
        return
    raise ValueError(f"bundle '{bundle.name}': no sample image source for a {bundle.task} bundle in {dataset}")


# ---------------------------------------------------------------------------------------------- local reference
def _bundle_pipeline(bundle_dir: Path, image: Path) -> np.ndarray:
    """``pred`` of the bundle's own inference.json: preprocessing, network (models/model.pt), inferer and
    postprocessing (without ``SaveImage(d)``), as ``python -m monai.bundle run`` would compute it."""
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, SaveImage, SaveImaged

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    parser["device"] = torch.device("cpu")
    network = parser.get_parsed_content("network_def")
    state = torch.load(bundle_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state) if isinstance(state.get("model"), dict) else state)
    network.eval()
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
    post = parser.get_parsed_content("postprocessing")
    post = Compose([t for t in post.flatten().transforms if not isinstance(t, (SaveImage, SaveImaged))])
    return np.asarray(post(data)["pred"].detach().cpu().numpy())


def local_classification(bundle_dir: Path, image: Path) -> np.ndarray:
    """Class probabilities of the bundle's own inference.json pipeline."""
    return _bundle_pipeline(bundle_dir, image).astype(np.float64).reshape(-1)


def local_segmentation(bundle_dir: Path, image: Path) -> np.ndarray:
    """Label map (spatial axes only) of the bundle's own inference.json pipeline on the input grid."""
    pred = _bundle_pipeline(bundle_dir, image)
    return pred[0] if pred.ndim == 4 else pred


# ------------------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(app: Path, studies: Path, port: int, models: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """``monailabel start_server`` in its own process group; stopped (group TERM, then KILL) on exit."""
    exe = Path(sys.executable).with_name("monailabel")
    cmd = [str(exe) if exe.exists() else "monailabel", "start_server", "--app", str(app), "--studies", str(studies),
           "--host", HOST, "--port", str(port), "--conf", "models", ",".join(models), "--conf", "zoo_source", "local",
           "--conf", "sam2", "false", "--conf", "preload", "false"]
    env = venv_env(MONAI_ZOO_SOURCE="local", BUNDLE_DOWNLOAD_SRC="local", MONAI_LABEL_AUTO_UPDATE_SCORING="false",
                   MONAI_LABEL_DATASTORE_AUTO_RELOAD="false", NO_PROXY=HOST, no_proxy=HOST, PYTHONUNBUFFERED="1")
    print(f"$ {' '.join(cmd)}  (log: {log})", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=app.parent,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop the server's whole process group: SIGTERM, wait ``grace`` seconds, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):  # leftovers of the group (workers), if any
        os.killpg(proc.pid, signal.SIGKILL)
    print(f"server stopped (exit code {proc.poll()})", flush=True)


def session() -> Any:
    import requests

    s = requests.Session()
    s.trust_env = False  # no proxies: 127.0.0.1 only
    return s


def wait_ready(proc: subprocess.Popen, base: str, models: list[str], timeout: float, log: Path) -> dict:
    """Poll ``/info/`` until it lists every model; raise if the server exits or the time runs out."""
    http = session()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}; log tail:\n{_tail(log)}")
        try:
            r = http.get(f"{base}/info/", timeout=10)
            if r.status_code == 200:
                info = r.json()
                if all(m in info.get("models", {}) for m in models):
                    return info
                last = f"models listed: {sorted(info.get('models', {}))}"
            else:
                last = f"HTTP {r.status_code}"
        except Exception as e:  # noqa: BLE001 - not up yet
            last = f"{type(e).__name__}"
        time.sleep(2)
    raise TimeoutError(f"server not ready after {timeout:.0f} s ({last}); log tail:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -------------------------------------------------------------------------------------------------- the checks
def check_info(info: dict, bundle: Bundle) -> str:
    entry = info["models"][bundle.model]
    expected = {v.lower(): int(k) for k, v in bundle.meta["network_data_format"]["outputs"]["pred"]["channel_def"].items()
                if bundle.task == "classification" or v.lower() != "background"}
    if entry.get("type") != bundle.task:
        raise AssertionError(f"type {entry.get('type')!r}, expected {bundle.task!r}")
    if entry.get("labels") != expected:
        raise AssertionError(f"labels {entry.get('labels')}, expected {expected}")
    return f"type={entry['type']} labels={entry['labels']} version={entry.get('version')}"


def check_classification(base: str, bundle: Bundle, sample: dict, app_bundle: Path, upload: bool,
                         timeout: float) -> str:
    http = session()
    params = {"params": json.dumps({"device": "cpu"})}
    url = f"{base}/infer/{bundle.model}"
    if upload:
        with open(sample["path"], "rb") as f:
            r = http.post(url, params={"output": "json"}, data=params,
                          files={"file": (sample["path"].name, f, "image/png")}, timeout=timeout)
    else:
        r = http.post(url, params={"image": sample["id"], "output": "json"}, data=params, timeout=timeout)
    if r.status_code != 200:
        raise AssertionError(f"HTTP {r.status_code}: {r.text[:300]}")
    result = r.json()
    prediction = result["prediction"]
    channel_def = bundle.meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    names = [channel_def[str(i)].lower() for i in range(len(channel_def))]
    if [p["label"] for p in prediction] != names or [p["idx"] for p in prediction] != list(range(len(names))):
        raise AssertionError(f"prediction entries {prediction} do not name the classes {names}")
    scores = np.array([p["score"] for p in prediction])
    if abs(scores.sum() - 1) > 1e-4 or scores.min() < 0:
        raise AssertionError(f"scores {scores} are not probabilities")
    reference = local_classification(app_bundle, sample["path"])
    if not np.allclose(scores, reference, atol=1e-4):
        raise AssertionError(f"MONAI Label scores {scores} != bundle pipeline {reference}")
    predicted = names[int(scores.argmax())]
    truth = names[sample["label"]]
    return (f"{'upload' if upload else 'id'} {sample['path'].name}: {predicted} "
            f"(p={scores.max():.3f}; true {truth}); equals the bundle's inference.json pipeline; "
            f"latency {result.get('latencies', {}).get('total')} s")


PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def check_segmentation(base: str, bundle: Bundle, sample: dict, app_bundle: Path, work: Path,
                       timeout: float) -> str:
    """``/infer`` by datastore id with ``output=image``: a label map on the input grid (NIfTI for a volume,
    an image file of the photograph's size for a 2D photograph)."""
    import nibabel as nib

    http = session()
    r = http.post(f"{base}/infer/{bundle.model}", params={"image": sample["id"], "output": "image"},
                  data={"params": json.dumps({"device": "cpu"})}, timeout=timeout)
    if r.status_code != 200:
        raise AssertionError(f"HTTP {r.status_code}: {r.text[:300]}")
    if sample["path"].suffix.lower() in PHOTO_SUFFIXES:
        return _check_photo_segmentation(r.content, bundle, sample, app_bundle, work)
    out = work / f"{sample['id']}.monailabel.nii.gz"
    out.write_bytes(r.content)
    label_img, source = nib.load(out), nib.load(sample["path"])
    labels = np.asarray(label_img.dataobj)
    if labels.shape != source.shape:
        raise AssertionError(f"label shape {labels.shape} != image shape {source.shape}")
    if not np.allclose(label_img.affine, source.affine, atol=1e-3):
        raise AssertionError(f"label affine differs from the image's:\n{label_img.affine}\n{source.affine}")
    allowed = {int(k) for k in bundle.meta["network_data_format"]["outputs"]["pred"]["channel_def"]}
    values = {int(v) for v in np.unique(labels)}
    if not values <= allowed:
        raise AssertionError(f"label values {sorted(values)} not in the bundle's channel_def {sorted(allowed)}")
    reference = local_segmentation(app_bundle, sample["path"])
    if reference.shape != labels.shape:
        raise AssertionError(f"bundle pipeline gives {reference.shape}, MONAI Label {labels.shape}")
    agree = float((reference == labels).mean())
    inter = float(np.logical_and(reference > 0, labels > 0).sum())
    dice_ref = 2 * inter / max(float((reference > 0).sum() + (labels > 0).sum()), 1.0)
    if agree < 0.999:
        raise AssertionError(f"only {agree:.4%} of voxels agree with the bundle's pipeline (Dice {dice_ref:.3f})")
    detail = (f"{labels.shape} labels {sorted(values)}, {int((labels > 0).sum())} foreground voxels; "
              f"{agree:.4%} voxels equal to the bundle's inference.json pipeline (Dice {dice_ref:.3f})")
    if sample.get("label") is not None:
        truth = np.asarray(nib.load(sample["label"]).dataobj) > 0
        inter = float(np.logical_and(truth, labels > 0).sum())
        dice = 2 * inter / max(float(truth.sum() + (labels > 0).sum()), 1.0)
        detail += f"; Dice vs BraTS whole tumour {dice:.3f} ({bundle.weights.split(' (')[0]} weights)"
    return detail


def _check_photo_segmentation(content: bytes, bundle: Bundle, sample: dict, app_bundle: Path, work: Path) -> str:
    """The label image MONAI Label returned for a 2D colour photograph, against the bundle's own pipeline."""
    from PIL import Image

    out = work / f"{sample['id']}.monailabel{sample['path'].suffix}"
    out.write_bytes(content)
    labels = np.asarray(Image.open(out))
    source = np.asarray(Image.open(sample["path"]))
    if labels.shape != source.shape[:2]:
        raise AssertionError(f"label shape {labels.shape} != photograph rows x columns {source.shape[:2]}")
    allowed = {int(k) for k in bundle.meta["network_data_format"]["outputs"]["pred"]["channel_def"]}
    values = {int(v) for v in np.unique(labels)}
    if not values <= allowed:
        raise AssertionError(f"label values {sorted(values)} not in the bundle's channel_def {sorted(allowed)}")
    reference = np.squeeze(_bundle_pipeline(app_bundle, sample["path"]), 0).T  # MONAI: (columns, rows) -> rows, columns
    if reference.shape != labels.shape:
        raise AssertionError(f"bundle pipeline gives {reference.shape}, MONAI Label {labels.shape}")
    agree = float((reference == labels).mean())
    if agree < 0.999:
        raise AssertionError(f"only {agree:.4%} of pixels agree with the bundle's pipeline")
    detail = (f"{labels.shape} {labels.dtype} labels {sorted(values)}, {int((labels > 0).sum())} foreground pixels; "
              f"{agree:.4%} pixels equal to the bundle's inference.json pipeline")
    if sample.get("label") is not None:
        truth = np.asarray(Image.open(sample["label"]).convert("L")) > 0
        inter = float(np.logical_and(truth, labels > 0).sum())
        dice = 2 * inter / max(float(truth.sum() + (labels > 0).sum()), 1.0)
        detail += f"; Dice vs the manual vessel mask {dice:.3f} ({bundle.weights.split(' (')[0]} weights)"
    return detail


@contextlib.contextmanager
def engine_runs() -> Iterator[list[dict]]:
    """Record every Ignite ``Engine.run``: class, whether it is a MONAI trainer, epochs and iterations run."""
    from ignite.engine import Engine
    from monai.engines import Trainer

    runs: list[dict] = []
    original = Engine.run

    def run(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        finally:
            runs.append({"engine": type(self).__name__, "trainer": isinstance(self, Trainer),
                         "epoch": self.state.epoch, "max_epochs": self.state.max_epochs,
                         "iterations": self.state.iteration})

    Engine.run = run
    try:
        yield runs
    finally:
        Engine.run = original


class _ListDatastore:
    """The part of MONAI Label's Datastore that BundleTrainTask uses: ``datalist()`` of ``{image, label}``."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def datalist(self, full_path: bool = True) -> list[dict]:
        return self.items


def _is_brats(bundle: Bundle) -> bool:
    """Whether the bundle trains on the BraTS volumes (train/ validation/ test/ subject folders)."""
    dataset = _resolve_dataset_dir(bundle.source)
    return dataset is not None and (dataset / "train").is_dir()


def _volume_files(bundle: Bundle) -> list[dict]:
    """Image/label file paths of the BraTS train and validation subjects, as a MONAI Label datastore lists them."""
    from monai_kd.data import brats_volume_datalist

    dataset = _resolve_dataset_dir(bundle.source)
    contrast = str(_config(bundle.source, "train.json").get("contrast", "flair")).lower()
    return [{"image": i["image"], "label": i["label"]}
            for split in ("train", "val") for i in brats_volume_datalist(dataset, split, contrast)]


def check_training(bundle: Bundle, served: Path, n_items: int, from_files: bool = False) -> str:
    """MONAI Label's BundleTrainTask on our train.json: 1 epoch on ``n_items`` real items of the bundle's data,
    or (``from_files``) on volume file paths as MONAI Label's own datastore gives them.

    Runs on a copy of the served bundle (``<work>/train/<model>``), so the app folder keeps its weights."""
    import torch
    from monai.bundle import ConfigParser
    from monailabel.tasks.train.bundle import BundleTrainTask

    app_bundle = served.parent.parent.parent / "train" / served.name
    if app_bundle.exists():
        shutil.rmtree(app_bundle)
    shutil.copytree(served, app_bundle)

    train_config = _config(app_bundle, "train.json")
    run_id = next((k for k in ("run_student", "run_students") if k in train_config), "run")
    parser = ConfigParser(train_config)
    parser["bundle_root"] = str(app_bundle)
    dataset = _resolve_dataset_dir(bundle.source)
    if dataset is not None:
        parser["dataset_dir"] = str(dataset)
    if from_files:
        datalist = _volume_files(bundle)
    else:
        # the bundle's labelled training items: train_datalist, else what train#dataset#data (which MONAI Label
        # overrides with the datastore) refers to, e.g. emtkd's labelled target-domain images
        items = parser.get_parsed_content("train_datalist" if "train_datalist" in train_config else "train#dataset#data")
        step = max(len(items) // n_items, 1)
        datalist = [{"image": i["image"], "label": i["label"]} for i in items[::step][:n_items]]

    task = BundleTrainTask(str(app_bundle), {"models": bundle.model})
    if not task.is_valid():
        raise AssertionError("BundleTrainTask did not accept the bundle")
    model_file = app_bundle / "models" / "model.pt"
    before = torch.load(model_file, map_location="cpu", weights_only=True)
    mtime = model_file.stat().st_mtime_ns
    cwd = os.getcwd()
    os.chdir(REPO)  # the bundles' relative dataset paths resolve from the repository root
    try:
        with engine_runs() as runs:
            start = time.perf_counter()
            task({"model": bundle.model, "max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.25,
                  "pretrained": True, "run_id": run_id, "tracking": "None"}, _ListDatastore(datalist))
            seconds = time.perf_counter() - start
    finally:
        os.chdir(cwd)
    if model_file.stat().st_mtime_ns == mtime:
        raise AssertionError("models/model.pt was not rewritten by the training run")
    after = torch.load(model_file, map_location="cpu", weights_only=True)
    after = after.get("model", after) if isinstance(after, dict) and "model" in after else after
    infer = ConfigParser(_config(app_bundle, "inference.json"))
    infer["bundle_root"] = str(app_bundle)
    infer.get_parsed_content("network_def").load_state_dict(after)  # strict: fits the served network
    changed = any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    if not changed:
        raise AssertionError("the weights did not change in the training run")
    trainers = [r for r in runs if r["trainer"]]
    n_train = len(datalist) - int(len(datalist) * 0.25)
    if len(trainers) != 1 or trainers[0]["epoch"] != 1 or trainers[0]["max_epochs"] != 1:
        raise AssertionError(f"expected one trainer run of exactly 1 epoch; engine runs: {runs}")
    evaluators = [r["engine"] for r in runs if not r["trainer"]]
    validation = (f"{evaluators[0]} ran on the validation split" if evaluators
                  else "no validation in epoch 1 (the bundle's val_interval)")
    what = "volume files" if from_files else "items"
    return (f"run_id={run_id}: {trainers[0]['engine']} ran 1 epoch ({trainers[0]['iterations']} iterations on "
            f"~{n_train} {what}), {validation}, {seconds:.1f} s; "
            f"overrides train#dataset#data, validate#dataset#data, train#trainer#max_epochs, train#handlers "
            f"(+CheckpointLoader), device, bundle_root; new models/model.pt loads into network_def")


# ----------------------------------------------------------------------------------------------------------- main
def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"check_server.py: error: --{what} needs NAME=EXISTING_FILE, got '{value}'")
        out[name] = str(Path(path).resolve())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default=",".join(DEFAULT_BUNDLES),
                        help="comma-separated bundle folder names under bundles/ (missing ones are skipped)")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                        help="student weights for a bundle (default: its models/model.pt, else fresh)")
    parser.add_argument("--teacher", action="append", default=[], metavar="NAME=PATH",
                        help="teacher weights for the training check (default: models/teacher.pt, else fresh)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server to be ready")
    parser.add_argument("--infer_timeout", type=float, default=600.0, help="seconds per inference request")
    parser.add_argument("--train_items", type=int, default=64, help="datastore items for the training check")
    parser.add_argument("--skip_train", action="store_true", help="skip the BundleTrainTask check")
    parser.add_argument("--unpatched_app", action="store_true",
                        help="serve with MONAI Label's sample app as shipped (fails on our bundles; see APP_PATCH)")
    parser.add_argument("--work_dir", default=None, help="keep the app, studies and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. a test runner's timeout) unwinds like an exception, so the server is stopped in `finally`
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    try:
        import monailabel
    except ImportError:
        print("check_server.py: error: monailabel is not importable; run it with .venv-monailabel/bin/python "
              "(bash scripts/monailabel/setup_venv.sh creates it)", file=sys.stderr)
        return 2
    weights, teachers = _pairs(args.weights, "weights"), _pairs(args.teacher, "teacher")
    names = [n.strip() for n in args.bundles.split(",") if n.strip()]
    present = [n for n in names if (REPO / "bundles" / n / "configs" / "metadata.json").is_file()]
    for n in sorted(set(names) - set(present)):
        print(f"note: bundles/{n} does not exist (yet); skipped")
    if not present:
        print("check_server.py: error: none of the bundles exist", file=sys.stderr)
        return 2

    report = Report()
    own_tmp = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="monai_kd-monailabel-")) if own_tmp else Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"monailabel {monailabel.__version__}; work dir {work}", flush=True)
    try:
        app = work / "monaibundle"
        if app.exists():
            shutil.rmtree(app)
        report.check("sample app 'monaibundle' copied from the installed package (no network)",
                     lambda: copy_sample_app(work))
        if not args.unpatched_app:
            report.check("sample app patched for classification bundles and MONAI 1.6", lambda: patch_sample_app(app))
        if report.failed:
            return 1
        studies = work / "studies"
        if studies.exists():
            shutil.rmtree(studies)
        studies.mkdir()
        bundles: list[Bundle] = []
        for name in present:
            def _prepare(name: str = name) -> str:
                bundle = install_bundle(name, app, weights, teachers, name_by_task=args.unpatched_app)
                add_samples(bundle, studies)
                bundles.append(bundle)
                return (f"{bundle.task} bundle served as '{bundle.model}', weights {bundle.weights}; samples "
                        + ", ".join(s["path"].name for s in bundle.samples))
            report.check(f"[{name}] local bundle + real sample images", _prepare)
        if not bundles:
            return 1

        port = free_port()
        base = f"http://{HOST}:{port}"
        log = work / "server.log"
        models = [b.model for b in bundles]
        with server(app, studies, port, models, log) as proc:
            info: dict = {}

            def _ready() -> str:
                start = time.perf_counter()
                info.update(wait_ready(proc, base, models, args.timeout, log))
                return f"{base} ready in {time.perf_counter() - start:.0f} s; models {sorted(info['models'])}"

            if report.check("server started on 127.0.0.1 and lists our models (/info/)", _ready):
                report.check("datastore lists the study images (/datastore/)", lambda: _datastore(base, bundles))
                for b in bundles:
                    app_bundle = app / "model" / b.model
                    report.check(f"[{b.name}] /info/ model type and labels", lambda b=b: check_info(info, b))
                    for k, sample in enumerate(b.samples):
                        if b.task == "classification":
                            report.check(f"[{b.name}] /infer/{b.model} (image id) {sample['path'].name}",
                                         lambda b=b, s=sample, a=app_bundle: check_classification(
                                             base, b, s, a, False, args.infer_timeout))
                            if k == len(b.samples) - 1:
                                report.check(f"[{b.name}] /infer/{b.model} (file upload) {sample['path'].name}",
                                             lambda b=b, s=sample, a=app_bundle: check_classification(
                                                 base, b, s, a, True, args.infer_timeout))
                        else:
                            report.check(f"[{b.name}] /infer/{b.model} (image id) {sample['path'].name}",
                                         lambda b=b, s=sample, a=app_bundle: check_segmentation(
                                             base, b, s, a, work, args.infer_timeout))
        report.add("server stopped (process group)", proc.poll() is not None, f"exit code {proc.returncode}")
        if proc.poll() is None or report.failed:
            print(f"server log tail ({log}):\n{_tail(log, 40)}")

        if not args.skip_train:
            for b in bundles:
                report.check(f"[{b.name}] MONAI Label BundleTrainTask accepts train.json (1 epoch)",
                             lambda b=b: check_training(b, app / "model" / b.model, args.train_items))
                if b.task == "segmentation" and _is_brats(b):
                    report.check(f"[{b.name}] MONAI Label BundleTrainTask trains from datastore file paths (1 epoch)",
                                 lambda b=b: check_training(b, app / "model" / b.model, args.train_items, True))
    except SystemExit as e:  # SIGTERM (see above)
        report.add("run completed", False, f"interrupted (exit code {e.code})")
        raise
    finally:
        print(report.summary(), flush=True)
        if own_tmp and not report.failed:
            shutil.rmtree(work, ignore_errors=True)
        elif report.failed:
            print(f"(work dir kept for inspection: {work})")
    return 1 if report.failed else 0


def _datastore(base: str, bundles: list[Bundle]) -> str:
    r = session().get(f"{base}/datastore/", params={"output": "all"}, timeout=60)
    r.raise_for_status()
    ids = set(r.json().get("objects", {}))
    wanted = {s["id"] for b in bundles for s in b.samples}
    if not wanted <= ids:
        raise AssertionError(f"missing {sorted(wanted - ids)} in {sorted(ids)}")
    return f"{len(ids)} images: {sorted(ids)}"


if __name__ == "__main__":
    sys.exit(main())
