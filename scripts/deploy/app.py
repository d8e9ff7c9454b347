#!/usr/bin/env python
"""MONAI Deploy example application for monai_kd bundles: DICOM series in, DICOM SEG or DICOM SR + JSON out.

Run with the MONAI Deploy virtualenv (``bash scripts/deploy/setup_venv.sh`` creates ``.venv-deploy``), on a
bundle's TorchScript export (``monai-kd export BUNDLE --output_dir DIR`` embeds ``metadata.json`` and
``inference.json`` in ``model.ts``)::

    .venv-deploy/bin/python scripts/deploy/app.py -i DICOM_DIR -o OUT_DIR -m DIR/model.ts [--modality CT]
        [--description TEXT] [--timings OUT_DIR/timings.json]

``-i/-o/-m`` (and ``-l``, ``-w``) are MONAI Deploy's own options (also ``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH``, ``HOLOSCAN_MODEL_PATH``, as in a MONAI Application Package); ``--modality``,
``--description`` and ``--timings`` are this app's.

The operator graph (SDK operators; * marks this app's subclasses and operators)::

    KDDICOMDataLoaderOperator* -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
        -> KDBundleInferenceOperator*  (MonaiBundleInferenceOperator reading the configs embedded in model.ts)
        -> segmentation:   DICOMSegmentationWriterOperator           -> <SOPInstanceUID>.dcm (DICOM SEG)
        -> classification: ClassificationResultOperator* (JSON)      -> DICOMTextSRWriterOperator -> SR .dcm

:class:`KDDICOMDataLoaderOperator` fills in empty UIDs of anonymised instances (the SDK's loader drops them; the
real CT series has empty Study/Series/SOP Instance UIDs). :class:`KDBundleInferenceOperator` adapts the SDK's generic bundle operator to monai_kd's bundles: the SDK
drops the bundle's ``LoadImaged`` (and with it ``ensure_channel_first``), so the channel axis is added back;
a 2D classification network given a volume classifies its middle slice, as ``monai-kd infer-dicom`` does (a
2D segmentation network runs on a volume when the bundle's inferer is a ``SliceInferer``, e.g. kdml_seg);
class probabilities are passed on as a dict (the SDK's own ``probabilities`` output maps probability values,
not class indices, to names). It also records the seconds spent per stage (``--timings``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

TIMINGS: dict[str, float] = defaultdict(float)  # seconds per stage, for --timings


def _own_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This app's options; the rest of ``argv`` goes to MONAI Deploy / Holoscan."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--modality", default=os.environ.get("MONAI_KD_MODALITY"), help="select series by Modality")
    parser.add_argument("--description", default=os.environ.get("MONAI_KD_DESCRIPTION"),
                        help="select series whose SeriesDescription contains this text (regex, case-insensitive)")
    parser.add_argument("--timings", default=os.environ.get("MONAI_KD_TIMINGS"), help="write stage seconds here")
    parser.add_argument("--bundle_name", default=os.environ.get("MONAI_KD_BUNDLE_NAME"),
                        help="name recorded in the outputs (default: metadata 'name', else the model's folder name)")
    return parser.parse_known_args(argv[1:])


OWN, REST = _own_args(sys.argv if __name__ == "__main__" else sys.argv[:1])  # imported: env defaults only

from monai.deploy.conditions import CountCondition  # noqa: E402  (Holoscan is imported here)
from monai.deploy.core import Application, Fragment, Image, IOType, Operator, OperatorSpec  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.dicom_seg_writer_operator import (  # noqa: E402
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator  # noqa: E402
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator  # noqa: E402
from monai.deploy.operators.dicom_text_sr_writer_operator import DICOMTextSRWriterOperator  # noqa: E402
from monai.deploy.operators.dicom_utils import EquipmentInfo, ModelInfo  # noqa: E402
from monai.deploy.operators.monai_bundle_inference_operator import (  # noqa: E402
    IOMapping,
    MonaiBundleInferenceOperator,
    get_bundle_config,
)

EMPTY_NUMBERS_DROPPED = ("SeriesNumber",)
TASKS = {"classes": "classification", "probabilities": "classification", "labels": "segmentation",
         "segmentation": "segmentation"}  # as monai_kd.dicom_inference.TASKS


def _timed(cls: type, key: str) -> type:
    """A subclass of operator ``cls`` whose ``compute`` seconds are added to ``TIMINGS[key]``."""

    class Timed(cls):  # type: ignore[misc, valid-type]
        def compute(self, op_input, op_output, context):
            start = time.perf_counter()
            try:
                return super().compute(op_input, op_output, context)
            finally:
                TIMINGS[key] += time.perf_counter() - start

    Timed.__name__ = Timed.__qualname__ = cls.__name__
    return Timed


class KDDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """:class:`DICOMDataLoaderOperator` that also loads anonymised instances with empty UIDs.

    The SDK's loader groups instances by *Study/Series Instance UID* and drops every instance whose UID is empty
    ("Error parsing SOP Instance: 'str' object has no attribute 'name'"), as in the real CT example series, and
    loses the whole series when its *Series Number* is present but empty (``int(None)``); that element is
    dropped from the in-memory dataset (type 2: absent and empty mean the same).
    Here the UIDs are filled in first as ``monai-kd infer-dicom`` does (:meth:`DicomSeries.reference_datasets
    <monai_kd.io.dicom_series.DicomSeries.reference_datasets>`: SOP Class/Instance UID from the file meta
    header, Series/Study UIDs derived deterministically from the series content), so both paths name and
    reference the same series. Instances with UIDs are left as they are. The input files are not modified.
    """

    def _load_data(self, files):
        import sys as _sys
        import warnings

        from monai_kd.io import list_series, load_dicom_series

        filled: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "derived UID" warnings: reported in the log below instead
            try:
                summaries = list_series(files)
            except Exception as e:  # noqa: BLE001 - leave everything to the SDK's own loader
                summaries = []
                self._logger.warning(f"monai_kd could not list the series: {e}")
            for summary in summaries:
                try:
                    series = load_dicom_series(summary.files)
                except Exception as e:  # noqa: BLE001 - an irregular series: the SDK's loader decides
                    self._logger.warning(f"series {summary.series_uid}: {e}")
                    continue
                if series.derived_uids:
                    self._logger.info(f"series {series.series_uid}: derived {', '.join(series.derived_uids)}")
                for path, ref in zip(series.files, series.reference_datasets(), strict=True):
                    filled[os.path.realpath(path)] = ref
        module = _sys.modules[DICOMDataLoaderOperator.__module__]
        original = module.dcmread

        def dcmread(path, *args, **kwargs):
            ds = original(path, *args, **kwargs)
            ref = filled.get(os.path.realpath(path))
            if ref is not None:
                for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                                "FrameOfReferenceUID"):
                    if not ds.get(keyword) and ref.get(keyword):
                        setattr(ds, keyword, ref.get(keyword))
            for keyword in EMPTY_NUMBERS_DROPPED:  # the SDK calls int() on these: an empty value drops the series
                if keyword in ds and ds[keyword].value in (None, ""):
                    del ds[keyword]
            return ds

        module.dcmread = dcmread
        try:
            return super()._load_data(files)
        finally:
            module.dcmread = original


class KDBundleInferenceOperator(MonaiBundleInferenceOperator):
    """:class:`MonaiBundleInferenceOperator` for monai_kd bundles (see the module docstring)."""

    def __init__(self, fragment: Fragment, *args, task: str, spatial_dims: int, class_names: list[str], **kwargs):
        self.task = task
        self.spatial_dims = spatial_dims
        self.class_names = class_names
        self.slice_index: int | None = None
        self._stage_seconds = 0.0
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input, op_output, context):
        start = time.perf_counter()
        self._stage_seconds = 0.0
        try:
            return super().compute(op_input, op_output, context)
        finally:  # what is not pre/inference/post: model loading, input conversion, output hand-over
            TIMINGS["model_load"] += time.perf_counter() - start - self._stage_seconds

    def _add(self, key: str, start: float) -> None:
        seconds = time.perf_counter() - start
        TIMINGS[key] += seconds
        self._stage_seconds += seconds

    def pre_process(self, data: Any, *args, **kwargs) -> Any:
        from monai.transforms import EnsureChannelFirst

        from monai_kd.dicom_inference import _middle_slice

        start = time.perf_counter()
        key = next(iter(self._inputs))
        image = data[key]
        if image.meta.get("original_channel_dim") == "no_channel" or image.ndim == len(image.meta.get(
                "spatial_shape", image.shape)):
            image = EnsureChannelFirst(channel_dim="no_channel")(image)  # the bundle's LoadImaged would have
        if image.ndim == 4 and self.spatial_dims == 2:
            from monai.inferers import SliceInferer

            if self.task == "classification":
                image, self.slice_index = _middle_slice(image)
            elif not isinstance(self._inferer, SliceInferer):
                raise ValueError("a 2D segmentation network on a volume needs a SliceInferer in the bundle's inferer")
        data[key] = image
        try:
            return super().pre_process(data, *args, **kwargs)
        finally:
            self._add("preprocess", start)

    def predict(self, data: Any, *args, **kwargs) -> Any:
        import torch

        start = time.perf_counter()
        try:
            with torch.no_grad():
                return super().predict(data, *args, **kwargs)
        finally:
            self._add("inference", start)

    def post_process(self, data: Any, *args, **kwargs) -> Any:
        start = time.perf_counter()
        try:
            return super().post_process(data, *args, **kwargs)
        finally:
            self._add("postprocess", start)

    def _send_output(self, value: Any, name: str, metadata: dict, op_output, context):
        if self.task != "classification":
            return super()._send_output(value, name, metadata, op_output, context)
        values = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float64)
        values = values.reshape(-1)
        if values.min() < 0 or values.max() > 1 or abs(values.sum() - 1) > 1e-3:  # no softmax in the bundle
            values = np.exp(values - values.max())
            values /= values.sum()
        op_output.emit({"class_names": self.class_names, "probabilities": values.tolist(),
                        "predicted_class": self.class_names[int(values.argmax())], "slice_index": self.slice_index},
                       name)


class ClassificationResultOperator(Operator):
    """Writes ``<SeriesInstanceUID>.classification.json`` and passes a one-line text result to the SR writer."""

    def __init__(self, fragment: Fragment, *args, output_folder: Path, bundle_name: str, **kwargs):
        self.output_folder = Path(output_folder)
        self.bundle_name = bundle_name
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("pred")
        spec.input("study_selected_series_list")
        spec.output("text")

    def compute(self, op_input, op_output, context):
        from monai_kd.io.atomic import atomic_paths

        start = time.perf_counter()
        result = op_input.receive("pred")
        selected = op_input.receive("study_selected_series_list")
        series = selected[0].selected_series[0].series
        series_uid = str(series.SeriesInstanceUID)
        summary = {
            "task": "classification",
            "bundle": self.bundle_name,
            "series_instance_uid": series_uid,
            "modality": str(getattr(series, "Modality", "")),
            "predicted_class": result["predicted_class"],
            "probabilities": dict(zip(result["class_names"], result["probabilities"], strict=True)),
            "slice_index": result["slice_index"],
            "writer": "MONAI Deploy App SDK example (scripts/deploy/app.py)",
        }
        self.output_folder.mkdir(parents=True, exist_ok=True)
        target = self.output_folder / f"{series_uid}.classification.json"
        with atomic_paths(target) as (temp,):
            Path(temp).write_text(json.dumps(summary, indent=2))
        probabilities = ", ".join(f"{c} {p:.4f}" for c, p in summary["probabilities"].items())
        text = f"{self.bundle_name}: {summary['predicted_class']} (probabilities: {probabilities})"
        if result["slice_index"] is not None:
            text += f"; classified slice index {result['slice_index']} of the volume"
        TIMINGS["write"] += time.perf_counter() - start
        op_output.emit(text, "text")


def _selection_rules(modality: str | None, description: str | None) -> str:
    """Rules for DICOMSeriesSelectorOperator: the first series matching Modality / SeriesDescription."""
    conditions: dict[str, str] = {}
    if modality:
        conditions["Modality"] = f"(?i){modality}"
    if description:
        conditions["SeriesDescription"] = f"(?i).*{description}.*"
    return json.dumps({"selections": [{"name": "monai_kd input series", "conditions": conditions}]})


class KDDeployApp(Application):
    """DICOM series -> monai_kd bundle (TorchScript with embedded configs) -> DICOM SEG / SR + JSON."""

    def compose(self):
        from monai_kd.io.atomic import check_output_dir

        context = Application.init_app_context(self.argv)
        input_path, output_path = Path(context.input_path), Path(context.output_path)
        check_output_dir(output_path, input_path)  # never write into the input
        model_path = Path(context.model_path)
        bundle = model_path if model_path.is_file() else next(iter(sorted(model_path.glob("*.ts"))), model_path)
        meta = get_bundle_config(str(bundle), ["inference"])["_meta_"]
        pred = meta["network_data_format"]["outputs"]["pred"]
        task = TASKS.get(pred.get("format"), "segmentation")
        in_spec = next(iter(meta["network_data_format"]["inputs"].values()))
        channel_def = {int(k): v for k, v in pred.get("channel_def", {}).items()}
        name = str(OWN.bundle_name or meta.get("name") or bundle.parent.name)
        version = str(meta.get("version", ""))
        logging.info(f"bundle {name} {version} ({task}) from {bundle}")

        loader = _timed(KDDICOMDataLoaderOperator, "read")(self, CountCondition(self, 1), input_folder=input_path,
                                                          name="dicom_loader")
        selector = _timed(DICOMSeriesSelectorOperator, "read")(
            self, rules=_selection_rules(OWN.modality, OWN.description), all_matched=False, name="series_selector")
        to_volume = _timed(DICOMSeriesToVolumeOperator, "read")(self, name="series_to_volume")
        infer = KDBundleInferenceOperator(
            self,
            task=task,
            spatial_dims=len(in_spec.get("spatial_shape", [0, 0, 0])),
            class_names=[channel_def.get(i, f"class_{i}") for i in range(int(pred.get("num_channels", 1)))],
            app_context=context,
            bundle_path=bundle,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image if task == "segmentation" else dict, IOType.IN_MEMORY)],
            name="bundle_inference",
        )
        model_info = ModelInfo(creator="monai_kd", name=name, version=version, uid="")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, infer, {("image", "image")})
        if task == "segmentation":
            descriptions = [
                SegmentDescription(
                    segment_label=label,
                    segmented_property_category=_category(),
                    segmented_property_type=_property(label, value),
                    algorithm_name=name,
                    algorithm_version=version or "0",
                )
                for value, label in sorted(channel_def.items()) if value > 0
            ]
            writer = _timed(DICOMSegmentationWriterOperator, "write")(
                self, segment_descriptions=descriptions, output_folder=output_path, model_info=model_info,
                custom_tags={"SeriesDescription": f"{name} segmentation (MONAI Deploy)"}, name="dicom_seg_writer")
            self.add_flow(infer, writer, {("pred", "seg_image")})
            self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        else:
            result = ClassificationResultOperator(self, output_folder=output_path, bundle_name=name,
                                                  name="classification_result")
            sr_writer = _timed(DICOMTextSRWriterOperator, "write")(
                self, output_folder=output_path, model_info=model_info, equipment_info=EquipmentInfo(),
                custom_tags={"SeriesDescription": f"{name} classification (MONAI Deploy)"}, copy_tags=True,
                name="dicom_sr_writer")
            self.add_flow(infer, result, {("pred", "pred")})
            self.add_flow(selector, result, {("study_selected_series_list", "study_selected_series_list")})
            self.add_flow(result, sr_writer, {("text", "text")})
            self.add_flow(selector, sr_writer, {("study_selected_series_list", "study_selected_series_list")})


def _category():
    from pydicom.sr.codedict import codes

    return codes.SCT.AnatomicalStructure


def _property(label: str, value: int):
    from monai_kd.io.dicom_seg import property_type

    return property_type(label, value)


def main() -> int:
    start = time.perf_counter()
    sys.argv = [sys.argv[0], *REST]
    app = KDDeployApp()
    app.run()
    TIMINGS["total"] = time.perf_counter() - start
    if OWN.timings:
        Path(OWN.timings).parent.mkdir(parents=True, exist_ok=True)
        Path(OWN.timings).write_text(json.dumps(dict(TIMINGS), indent=2))
    logging.info("stage seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in TIMINGS.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
