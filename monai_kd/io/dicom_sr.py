# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""An image classification result as a DICOM Comprehensive SR referencing its source series (highdicom).

The report follows TID 1500 *Measurement Report*, the template DICOM defines for imaging measurements and
qualitative evaluations, observed by the model as a device:

- one *Measurements and Qualitative Evaluations* group (TID 1501) per class, whose *Finding* type is the class
  concept and whose measurement *Probability* (DCM 122157, unit UCUM ``1``) is the model's probability;
- one group holding the qualitative evaluation *Classification* (SCT 278201002) = the predicted class.

Class concepts come from the bundle's ``channel_def`` names (SNOMED CT when pydicom knows the name, else a
private ``99MONAIKD`` code, see :func:`monai_kd.io.dicom_seg.property_type`). Every group names the image that
was classified (*Source image for measurement group*: the slice when a 2D model read a volume) and
the model (*Algorithm Name/Version*); the SR's evidence lists every instance of the source series, so it
carries the source study and series UIDs. New Series and SOP Instance UIDs are generated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .atomic import atomic_paths
from .derived import complete_derived
from .dicom_seg import property_type
from .dicom_series import DicomSeries

__all__ = ["build_classification_sr", "read_classification_sr", "write_classification_sr"]

PREDICTED_CLASS_ID = "predicted class"


def _source_images(series: DicomSeries, slice_index: int | None) -> list[hd.sr.SourceImageForMeasurementGroup]:
    """References to the classified image(s): slice ``slice_index`` of the volume, or every image if ``None``."""
    references = series.reference_datasets()
    if slice_index is None:
        return [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in references]
    if not 0 <= int(slice_index) < len(series.frames):
        raise ValueError(f"slice index {slice_index} outside the series' {len(series.frames)} slice(s).")
    frame = series.frames[int(slice_index)]
    numbers = None if frame.frame is None else [frame.frame + 1]
    return [
        hd.sr.SourceImageForMeasurementGroup.from_source_image(
            references[frame.instance], referenced_frame_numbers=numbers
        )
    ]


def build_classification_sr(
    probabilities: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    series: DicomSeries,
    slice_index: int | None = None,
    algorithm_name: str = "monai_kd",
    algorithm_version: str = "0.1.0",
    series_description: str | None = None,
    series_number: int = 1001,
) -> hd.sr.ComprehensiveSR:
    """Build (in memory) a Comprehensive SR with the predicted class and every class probability.

    Args:
        probabilities: one probability per class.
        class_names: one name per class (e.g. the values of the bundle's ``channel_def``), in class order.
        series: the source series.
        slice_index: slice of the volume that was classified (a 2D model on a volume); ``None``: the whole
            series was classified, every image is referenced.
        algorithm_name: model name (e.g. the bundle name).
        algorithm_version: model version.
        series_description: *Series Description* of the SR; default ``"Classification <algorithm_name>"``.
        series_number: *Series Number* of the SR.

    Returns:
        The SR dataset (unverified, complete), with new Series and SOP Instance UIDs.

    Raises:
        ValueError: When probabilities and class names differ in length or a probability is outside [0, 1].
    """
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(values) != len(class_names) or len(values) == 0:
        raise ValueError(f"{len(values)} probabilities for {len(class_names)} class names {list(class_names)}.")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"probabilities must lie in [0, 1], got {values.tolist()}.")
    concepts = [property_type(name, index) for index, name in enumerate(class_names)]
    predicted = int(values.argmax())
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name[:64], version=algorithm_version[:64])
    source = _source_images(series, slice_index)
    groups = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"probability of {name}"[:64]),
            finding_type=concept,
            algorithm_id=algorithm,
            source_images=source,
            measurements=[
                hd.sr.Measurement(
                    name=codes.DCM.Probability, value=float(value), unit=codes.UCUM.NoUnits, algorithm_id=algorithm
                )
            ],
        )
        for name, concept, value in zip(class_names, concepts, values, strict=True)
    ]
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=PREDICTED_CLASS_ID),
            algorithm_id=algorithm,
            source_images=source,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(name=codes.SCT.Classification, value=concepts[predicted])
            ],
        )
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=algorithm_name[:64], manufacturer_name="monai_kd", model_name=algorithm_name[:64]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    evidence = series.reference_datasets()
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="monai_kd",
        is_complete=True,
        series_description=(series_description or f"Classification {algorithm_name}")[:64],
    )
    return complete_derived(sr, evidence)


def write_classification_sr(
    probabilities: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    series: DicomSeries,
    path: str | os.PathLike,
    **kwargs,
) -> str:
    """Build an SR with :func:`build_classification_sr` and write it atomically (temporary file, then rename).

    Args:
        probabilities: one probability per class.
        class_names: one name per class.
        series: the source series (its files and folder are protected from being overwritten).
        path: output file, e.g. ``out/classification.sr.dcm``.
        kwargs: further arguments of :func:`build_classification_sr`.

    Returns:
        The written path.
    """
    sr = build_classification_sr(probabilities, class_names, series, **kwargs)
    with atomic_paths(path, protect=(series.source, *series.files)) as (temp,):
        sr.save_as(temp, enforce_file_format=True)
    return os.fspath(path)


def read_classification_sr(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> dict:
    """Read back the result of :func:`write_classification_sr`.

    Args:
        path: the SR file.
        class_names: the class names used when writing; coded concepts are mapped back to them (a name found in
            SNOMED CT is stored with the standard meaning, e.g. ``normal`` as ``Normal``). Without it, the code
            meanings are returned.

    Returns:
        ``{"predicted_class": name, "probabilities": {name: p, ...}, "study_uid": ..., "series_uid": ...,
        "source_sop_instance_uids": [...]}`` where the UIDs are those of the referenced source (study, series,
        classified images).

    Raises:
        ValueError: When the file is not such a report, or a class concept is not one of ``class_names``.
    """
    names = {}
    if class_names is not None:
        names = {(c.value, c.scheme_designator): n for i, n in enumerate(class_names) for c in [property_type(n, i)]}

    def _name(concept) -> str:
        if class_names is None:
            return str(concept.meaning)
        key = (concept.value, concept.scheme_designator)
        if key not in names:
            raise ValueError(f"'{path}': class concept {concept.meaning!r} is not one of {list(class_names)}.")
        return names[key]

    sr = hd.sr.srread(path)
    probabilities: dict[str, float] = {}
    predicted = None
    source_uids: list[str] = []
    for group in sr.content.get_image_measurement_groups():
        for evaluation in group.get_qualitative_evaluations(name=codes.SCT.Classification):
            predicted = _name(evaluation.value)
        for measurement in group.get_measurements(name=codes.DCM.Probability):
            probabilities[_name(group.finding_type)] = float(measurement.value)
        if group.source_images:
            source_uids = sorted({str(image.referenced_sop_instance_uid) for image in group.source_images})
    if predicted is None or not probabilities:
        raise ValueError(f"'{path}' holds no classification result (no Classification / Probability items).")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    return {
        "predicted_class": predicted,
        "probabilities": probabilities,
        "study_uid": str(evidence.StudyInstanceUID),
        "series_uid": str(evidence.ReferencedSeriesSequence[0].SeriesInstanceUID),
        "source_sop_instance_uids": source_uids,
    }
