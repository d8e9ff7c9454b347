"""Linear centred kernel alignment (Kornblith et al. 2019) between layer representations, and its heatmap."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.utils import optional_import

from monai_kd.io.atomic import atomic_paths


def _normalised_gram(x: torch.Tensor) -> torch.Tensor:
    """Centred linear Gram matrix ``Xc Xc^T`` of ``x`` flattened to ``(N, p)``, divided by its Frobenius norm.

    A representation with no variance across samples gives a matrix of NaN (CKA is undefined for it).
    """
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"CKA needs features of shape (N, ...) with N >= 2 samples, got {tuple(x.shape)}.")
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    flat = flat - flat.mean(dim=0, keepdim=True)
    gram = flat @ flat.T  # (N, N): cheaper than the (p, p) cross-covariance when p > N
    norm = torch.linalg.matrix_norm(gram)
    return gram / norm if norm > 0 else torch.full_like(gram, float("nan"))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between two representations of the same ``N`` samples (Kornblith et al. 2019, eq. for linear HSIC).

    ``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` with ``X`` ``(N, p)`` and ``Y`` ``(N, q)`` the features
    flattened per sample and centred over the samples; computed via the ``N x N`` Gram matrices
    (``||Y^T X||_F^2 = <X X^T, Y Y^T>_F``) in float64. Invariant to orthogonal transforms and isotropic scaling
    of either representation, not to general invertible linear maps. In ``[0, 1]``; NaN when a representation is
    constant across samples.

    Args:
        x: features ``(N, *)``, e.g. a ``(N, C, H, W)`` feature map.
        y: features ``(N, *)`` of the same samples; their size may differ from ``x``'s.

    Returns:
        a 0-dim float64 tensor.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares the same samples: got {x.shape[0]} and {y.shape[0]} rows.")
    return (_normalised_gram(x) * _normalised_gram(y)).sum()


def cka_matrix(features_a: Mapping[str, torch.Tensor], features_b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Linear CKA between every layer of ``features_a`` (rows) and every layer of ``features_b`` (columns).

    Args:
        features_a: layer name -> features ``(N, *)``, e.g. the teacher's; the row order is the mapping's order.
        features_b: layer name -> features ``(N, *)`` of the same samples, e.g. a student's.

    Returns:
        a float64 tensor ``(len(features_a), len(features_b))``.
    """
    if not features_a or not features_b:
        raise ValueError("cka_matrix needs at least one layer on each side.")
    grams_a = [_normalised_gram(v) for v in features_a.values()]
    grams_b = [_normalised_gram(v) for v in features_b.values()]
    sizes = {g.shape[0] for g in grams_a + grams_b}
    if len(sizes) != 1:
        raise ValueError(f"all features must hold the same samples, got sample counts {sorted(sizes)}.")
    return torch.stack([torch.stack([(ga * gb).sum() for gb in grams_b]) for ga in grams_a])


def save_cka_heatmap(
    matrix: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
    row_label: str = "teacher",
    col_label: str = "student",
    annotate: bool = True,
) -> str:
    """Write a CKA matrix as a PNG heatmap (needs matplotlib; Agg canvas, the global pyplot backend is untouched).

    The file is written atomically (temporary file, then rename). Colours span ``[0, 1]``.

    Args:
        matrix: ``(len(row_names), len(col_names))`` values, e.g. from :func:`cka_matrix`.
        row_names: layer names of the rows.
        col_names: layer names of the columns.
        path: PNG file to write.
        title: optional figure title.
        row_label: axis label of the rows.
        col_label: axis label of the columns.
        annotate: print the values in the cells (for matrices up to 12 x 12).

    Returns:
        ``path`` as a string.
    """
    # imported here so that monai_kd.metrics does not load matplotlib (an optional dependency) on import
    canvas_cls, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")
    figure_cls, _ = optional_import("matplotlib.figure", name="Figure")
    values = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    if values.shape != (len(row_names), len(col_names)):
        raise ValueError(f"matrix shape {values.shape} does not match {len(row_names)} rows x {len(col_names)} columns.")
    fig = figure_cls(figsize=(1.2 + 0.7 * len(col_names), 1.0 + 0.55 * len(row_names)), dpi=100, layout="constrained")
    canvas_cls(fig)
    ax = fig.add_subplot()
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="magma", origin="lower", aspect="auto")
    ax.set_xticks(range(len(col_names)), labels=list(col_names), rotation=45, ha="right")
    ax.set_yticks(range(len(row_names)), labels=list(row_names))
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title)
    if annotate and max(values.shape) <= 12:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v <= 0.6 else "black")
    fig.colorbar(image, ax=ax, label="linear CKA")
    with atomic_paths(path) as (tmp,):
        fig.savefig(tmp, format="png")
    return os.fspath(path)
