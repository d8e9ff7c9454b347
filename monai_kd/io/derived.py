# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Complete what a derived object (SEG, SR) needs and a slightly invalid source lacks, honestly.

highdicom copies the Patient module of the source into a derived object. De-identified public data often says
*Patient Identity Removed* ``YES`` without the *De-identification Method* (or its code sequence) that DICOM then
requires (Type 1C), so the SEG/SR would inherit the error (``dciodvfy``: "Missing attribute Type 1C Conditional
Element=<DeidentificationMethod>"). :func:`complete_derived` fills it from the sources when any of them has it,
and otherwise states what is known -- that the source was marked de-identified by a method it did not record --
instead of inventing a method or dropping the flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

__all__ = ["UNRECORDED_DEIDENTIFICATION", "complete_derived"]

# LO, at most 64 characters: what is known about a source that is marked de-identified without a method
UNRECORDED_DEIDENTIFICATION = "source marked de-identified; its method was not recorded"


def complete_derived(derived: Dataset, sources: Sequence[Dataset]) -> Dataset:
    """Fill the conditional attributes a derived object needs because of what it copied from its sources.

    Args:
        derived: the SEG/SR dataset (modified in place).
        sources: the source datasets it was derived from.

    Returns:
        ``derived``.
    """
    if str(derived.get("PatientIdentityRemoved", "")).upper() == "YES" and not (
        derived.get("DeidentificationMethod") or derived.get("DeidentificationMethodCodeSequence")
    ):
        for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
            value = next((ds.get(keyword) for ds in sources if ds.get(keyword)), None)
            if value is not None:
                setattr(derived, keyword, value)
        if not (derived.get("DeidentificationMethod") or derived.get("DeidentificationMethodCodeSequence")):
            derived.DeidentificationMethod = UNRECORDED_DEIDENTIFICATION
    return derived
