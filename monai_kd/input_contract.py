"""What a bundle's student was trained for, and a guard that refuses other input unless forced.

A bundle's ``configs/metadata.json`` declares, under ``input_contract``, the input its student accepts::

    "input_contract": {
        "modality": ["DX", "CR"],        # DICOM Modality values accepted
        "body_part": ["CHEST"],          # Body Part Examined values accepted (checked when the series states one)
        "image_kind": "frontal paediatric chest radiograph (PneumoniaMNIST)",
        "dimensionality": [2],           # of the input: 2 (a single image) and/or 3 (a volume)
        "channels": 1,                   # samples per pixel: 1 grey-scale, 3 colour
        "pixel_spacing_mm": null         # [min, max] in-plane spacing accepted, or null when the input is resized
    }

The same declaration is shown in the model card (:mod:`monai_kd.model_card`) and checked by :func:`check_input`
before ``monai-kd infer-dicom``, ``infer-dicomweb`` and the DICOM node run the student: a series that does not match
is refused in one line (:class:`InputContractError`, a :class:`~monai_kd.io.dicom_series.DicomInputError`) unless
forced, and a forced run records the override in its outputs. A bundle without ``input_contract`` is not guarded.
NIfTI files state no modality or body part: only their dimensionality and channels are checked.

"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monai_kd.io.dicom_series import DicomInputError

__all__ = ["InputContract", "InputContractError", "check_input", "override_note"]

CONTRACT_KEY = "input_contract"
_KEYS = {"modality", "body_part", "image_kind", "dimensionality", "channels", "pixel_spacing_mm"}


class InputContractError(DicomInputError):
    """The input is not what the model was trained for (and the run was not forced)."""


def _upper(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    values = [values] if isinstance(values, str) else list(values)
    return tuple(str(v).strip().upper() for v in values)


@dataclass(frozen=True)
class InputContract:
    """The input a bundle's student accepts (see the module docstring).

    Attributes:
        modality: accepted DICOM *Modality* values (empty: any).
        body_part: accepted *Body Part Examined* values (empty: any; a series without one passes).
        image_kind: free-text description shown in refusals and the model card.
        dimensionality: accepted input dimensionalities (2 and/or 3; empty: any).
        channels: accepted samples per pixel (``None``: any).
        pixel_spacing_mm: accepted in-plane pixel spacing range in mm (``None``: any).
    """

    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    image_kind: str = ""
    dimensionality: tuple[int, ...] = ()
    channels: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> InputContract | None:
        """The contract declared in a bundle's metadata, ``None`` when it declares none.

        Raises:
            ValueError: the declaration has unknown keys or malformed values (naming them).
        """
        spec = meta.get(CONTRACT_KEY)
        if spec is None:
            return None
        if not isinstance(spec, Mapping):
            raise ValueError(f"metadata '{CONTRACT_KEY}' must be an object, got {type(spec).__name__}.")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ValueError(f"metadata '{CONTRACT_KEY}' has unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}.")
        dims = spec.get("dimensionality") or ()
        dims = (dims,) if isinstance(dims, int) else tuple(int(d) for d in dims)
        if any(d not in (2, 3) for d in dims):
            raise ValueError(f"metadata '{CONTRACT_KEY}.dimensionality' must list 2 and/or 3, got {list(dims)}.")
        spacing = spec.get("pixel_spacing_mm")
        if spacing is not None and (len(spacing) != 2 or not 0 < float(spacing[0]) <= float(spacing[1])):
            raise ValueError(f"metadata '{CONTRACT_KEY}.pixel_spacing_mm' must be [min, max] in mm, got {spacing}.")
        return cls(
            modality=_upper(spec.get("modality")),
            body_part=_upper(spec.get("body_part")),
            image_kind=str(spec.get("image_kind") or ""),
            dimensionality=dims,
            channels=None if spec.get("channels") is None else int(spec["channels"]),
            pixel_spacing_mm=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        )

    def describe(self) -> str:
        """One phrase: what the student accepts."""
        parts = [self.image_kind] if self.image_kind else []
        if self.modality:
            parts.append("modality " + "/".join(self.modality))
        if self.body_part:
            parts.append("body part " + "/".join(self.body_part))
        if self.dimensionality:
            parts.append(" or ".join(f"{d}D" for d in self.dimensionality))
        if self.channels is not None:
            parts.append(f"{self.channels} channel(s)")
        if self.pixel_spacing_mm is not None:
            parts.append(f"pixel spacing {self.pixel_spacing_mm[0]:g}-{self.pixel_spacing_mm[1]:g} mm")
        return ", ".join(parts)

    def violations(
        self,
        modality: str | None,
        body_part: str | None,
        dimensionality: int | None,
        channels: int | None,
        pixel_spacing: Sequence[float] | None,
    ) -> list[str]:
        """What does not match, one phrase each (empty when the input fits).

        Args:
            modality: the input's *Modality* (``None``: not stated, not checked).
            body_part: its *Body Part Examined* (``None`` or empty: not stated, not checked).
            dimensionality: 2 for a single image, 3 for a volume of several slices (``None``: not known).
            channels: samples per pixel (``None``: not known).
            pixel_spacing: in-plane spacing in mm (``None``: not known, not checked).
        """
        found = []
        if self.modality and modality is not None and modality.strip().upper() not in self.modality:
            found.append(f"modality {modality or '(empty)'} is not {'/'.join(self.modality)}")
        if self.body_part and body_part and body_part.strip().upper() not in self.body_part:
            found.append(f"body part {body_part} is not {'/'.join(self.body_part)}")
        if self.dimensionality and dimensionality is not None and dimensionality not in self.dimensionality:
            found.append(f"a {dimensionality}D input where the model takes {' or '.join(f'{d}D' for d in self.dimensionality)}")
        if self.channels is not None and channels is not None and channels != self.channels:
            found.append(f"{channels} channel(s) where the model takes {self.channels}")
        if self.pixel_spacing_mm is not None and pixel_spacing is not None:
            low, high = self.pixel_spacing_mm
            outside = [s for s in pixel_spacing if not low <= float(s) <= high]
            if outside:
                found.append(f"pixel spacing {[round(float(s), 3) for s in pixel_spacing]} mm outside {low:g}-{high:g} mm")
        return found


def _describe_dicom(series: Any) -> dict[str, Any]:
    """Modality, body part, dimensionality, channels and pixel spacing of a :class:`DicomSeries`."""
    body_part = str(series.headers[0].get("BodyPartExamined", "") or "")
    dims = 3 if series.is_volume and len(series.frames) > 1 else 2
    spacing = None
    try:
        spacing = [float(s) for s in series.pixel_spacing]
    except (TypeError, ValueError, IndexError, AttributeError):
        spacing = None
    if spacing is not None and not all(s > 0 for s in spacing):
        spacing = None
    if not series.is_volume and series.headers[0].get("PixelSpacing") is None:
        spacing = None  # a photograph or radiograph without stated spacing: nothing to check
    return {"modality": str(series.modality or ""), "body_part": body_part, "dimensionality": dims,
            "channels": int(series.channels), "pixel_spacing": spacing}


def _describe_nifti(path: str) -> dict[str, Any]:
    """Dimensionality, channels and in-plane spacing of a NIfTI file, from its header only."""
    import nibabel as nib

    try:
        image = nib.load(path)
        shape, zooms = image.shape, image.header.get_zooms()
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader that loads it, in one line
        return {"modality": None, "body_part": None, "dimensionality": None, "channels": None, "pixel_spacing": None}
    dims = 3 if len(shape) >= 3 and shape[2] > 1 else 2
    channels = int(shape[3]) if len(shape) == 4 else 1
    return {"modality": None, "body_part": None, "dimensionality": dims, "channels": channels,
            "pixel_spacing": [float(z) for z in zooms[:2]]}


def check_input(
    meta: Mapping[str, Any],
    series: Any = None,
    input: str | os.PathLike | None = None,
    force: bool = False,
    bundle: str | None = None,
) -> dict[str, Any]:
    """Check an input against the bundle's input contract; refuse it in one line unless ``force``.

    Args:
        meta: the bundle's metadata.
        series: the selected :class:`~monai_kd.io.dicom_series.DicomSeries` (DICOM input), or ``None``.
        input: the NIfTI file when ``series`` is ``None``.
        force: run anyway when the input does not match; the returned record says so.
        bundle: the bundle's name, for the message.

    Returns:
        the record written with the outputs: ``{"declared": bool, "accepts": str, "input": {...},
        "violations": [...], "forced": bool}``.

    Raises:
        InputContractError: the input does not match and ``force`` is false.
        ValueError: the metadata's declaration is malformed.
    """
    contract = InputContract.from_metadata(meta)
    name = bundle or str(meta.get("name") or "the bundle")
    if series is not None:
        found, source = _describe_dicom(series), f"{series.source}: series {series.modality or '?'} '{series.description}'"
    elif input is not None:
        found, source = _describe_nifti(os.fspath(input)), f"{os.fspath(input)}"
    else:
        raise ValueError("check_input needs a DICOM series or a NIfTI input.")
    if contract is None:
        return {"declared": False, "accepts": "not declared (the bundle's metadata has no input_contract)",
                "input": found, "violations": [], "forced": False}
    violations = contract.violations(**found)
    if violations and not force:
        raise InputContractError(
            f"{source} is not what the model of {name} was trained for ({contract.describe()}): "
            f"{'; '.join(violations)}. Use --force to run it anyway (the output records the override)."
        )
    return {"declared": True, "accepts": contract.describe(), "input": found, "violations": violations,
            "forced": bool(violations)}


def override_note(record: Mapping[str, Any] | None) -> str | None:
    """A short text for DICOM outputs of a forced run (``None`` when nothing was overridden)."""
    if not record or not record.get("forced"):
        return None
    return "FORCED: input outside the model's contract: " + "; ".join(record["violations"])
