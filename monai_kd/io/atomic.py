# Copyright (c) MONAI KD contributors.
# Licensed under the Apache License, Version 2.0.
"""Atomic output files: each output is written to a hidden temporary file beside its target and renamed
into place only when every output of the group has been written, so a failure never leaves a partial file.

- :func:`check_output_dir`: refuse an output folder that is, or lies inside, the input folder (or is the
  input file), before any work is done.
- :func:`atomic_paths`: context manager yielding temporary paths for a group of targets; on success they are
  renamed onto the targets (``os.replace``, atomic on POSIX within a file system), on error they are removed.

Example::

    out = check_output_dir("out", "dicom_series/")
    with atomic_paths(out / "a.dcm", out / "a.nii.gz") as (tmp_dcm, tmp_nii):
        ds.save_as(tmp_dcm)
        nib.save(image, tmp_nii)  # the temporary name keeps the ".nii.gz" suffix
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputPathError", "OutputWriteError", "atomic_paths", "check_output_dir"]

TEMP_PREFIX = ".tmp-"


class OutputPathError(ValueError):
    """An output location would overwrite or pollute the input, or is not a usable folder."""


class OutputWriteError(OSError, OutputPathError):
    """An output could not be written (full disk, file size limit, read-only folder); names the output."""


def _is_within(path: Path, folder: Path) -> bool:
    """Whether resolved ``path`` is ``folder`` or lies below it."""
    return path == folder or folder in path.parents


def check_output_dir(output: str | os.PathLike, input: str | os.PathLike) -> Path:
    """Validate the output folder against the input before any output is produced.

    The output folder may not exist yet (it is created when the outputs are committed). Symbolic links are
    resolved, so an alias of the input folder is refused too.

    Args:
        output: output folder.
        input: input folder or file (DICOM series folder, multi-frame DICOM file, NIfTI file).

    Returns:
        The resolved output folder.

    Raises:
        OutputPathError: When ``output`` is the input file, is an existing file, or is (inside) the input folder.
    """
    out = Path(output).expanduser().resolve()
    src = Path(input).expanduser().resolve()
    if out == src:
        raise OutputPathError(f"output '{output}' is the input itself; choose a separate output folder.")
    if src.is_dir() and _is_within(out, src):
        raise OutputPathError(
            f"output folder '{output}' is inside the input folder '{input}'; outputs are never written into the "
            "input, choose a folder outside it."
        )
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"output '{output}' exists and is not a folder.")
    return out


def _fsync(path: str) -> None:
    """Flush a written file to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_paths(
    *targets: str | os.PathLike, protect: str | os.PathLike | Sequence[str | os.PathLike] = ()
) -> Iterator[tuple[str, ...]]:
    """Yield one temporary path per target; commit them all on success, remove them all on error.

    A temporary path is ``<target folder>/.tmp-<random>-<target name>``: same folder (so the final rename is
    atomic) and same suffix (so writers that pick the format from the extension, like nibabel, still work).
    Missing target folders are created, and removed again if the block fails and they are still empty.

    Args:
        targets: final output paths.
        protect: input folders or files; a target equal to one of them or inside one of them is refused.

    Yields:
        The temporary paths, in the order of ``targets``.

    Raises:
        OutputPathError: When no target is given, two targets are the same, or a target would overwrite or
            write into ``protect``.
        OutputWriteError: A folder cannot be created or an output cannot be written (full disk, read-only
            location); the message names the output, nothing is left behind.
    """
    if not targets:
        raise OutputPathError("atomic_paths needs at least one target path.")
    finals = [Path(t).expanduser().resolve() for t in targets]
    if len(set(finals)) != len(finals):
        raise OutputPathError(f"duplicate output paths: {[str(t) for t in targets]}.")
    guarded_paths = [protect] if isinstance(protect, (str, os.PathLike)) else list(protect)
    for guarded in [Path(p).expanduser().resolve() for p in guarded_paths]:
        for final in finals:
            if final == guarded or (guarded.is_dir() and _is_within(final, guarded)):
                raise OutputPathError(f"refusing to write '{final}': it would overwrite or write into the input.")
    created: list[Path] = []
    for folder in dict.fromkeys(f.parent for f in finals):
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only location
            _discard([], created)
            raise OutputWriteError(f"cannot create the output folder '{folder}': {e.strerror or e}.") from e
        created.extend(missing)  # deepest first, so they can be removed in this order
    token = secrets.token_hex(4)
    temps = [str(f.parent / f"{TEMP_PREFIX}{token}-{f.name}") for f in finals]
    try:
        yield tuple(temps)
        for temp in temps:
            if not os.path.isfile(temp):
                raise OutputPathError(f"the writer produced no file for '{temp}'.")
            _fsync(temp)
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
    except OSError as e:  # full disk, file size limit, read-only or vanished folder: say which output
        _discard(temps, created)
        if isinstance(e, OutputWriteError):
            raise
        where = finals[0] if len(finals) == 1 else finals[0].parent
        raise OutputWriteError(f"cannot write '{where}': {e.strerror or e or type(e).__name__}.") from e
    except BaseException:
        _discard(temps, created)
        raise


def _discard(temps: Sequence[str], created: Sequence[Path]) -> None:
    """Remove the temporary files and the folders :func:`atomic_paths` created (if still empty)."""
    for temp in temps:
        if os.path.lexists(temp):
            os.remove(temp)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            pass
