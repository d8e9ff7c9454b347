"""Document the cross-domain benchmarks' data: BraTS T1c -> FLAIR slices and PneumoniaMNIST acquisition domains.

Prints one summary table per benchmark from the real data in ``../shared/data``:

- BraTS: per split and contrast, the subjects, the number of axial slices kept, the tumour-present
  count and fraction, and the labelled/unlabelled counts for ``--labelled-fraction``;
- PneumoniaMNIST: per split and acquisition domain, the number of images, the pneumonia fraction and
  the intensity mean/std after the shift.

With ``--montage`` it also saves two PNG figures into ``--out`` (default ``scripts/_work/``, git-ignored):
``brats_slices_montage.png`` (the same slices in T1c and FLAIR, tumour outlined) and
``pneumoniamnist_domains_montage.png`` (the same X-rays under every acquisition shift).

Example::

    python scripts/prepare_brats_slices.py --montage
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_kd.data import medmnist_datalist
from monai_kd.data.brats_slices import BRATS_CONTRASTS, brats_slice_datalist
from monai_kd.data.domain_shift import DOMAINS, shifted_medmnist_datalist

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SPLITS = ("train", "val", "test")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a Markdown table.

    Args:
        header: column names.
        rows: one sequence of cells per row.

    Returns:
        The table text.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def brats_summary(
    dataset_dir: Path, spatial_size: tuple[int, int], labelled_fraction: float, seed: int, **options: float
) -> str:
    """Summarise every split and contrast of the BraTS slice datalists.

    Args:
        dataset_dir: BraTS dataset folder (``train/``, ``validation/``, ``test/``).
        spatial_size: slice size (H, W).
        labelled_fraction: labelled fraction whose labelled/unlabelled counts are shown.
        seed: seed of the labelled subset.
        options: further keyword arguments of :func:`brats_slice_datalist`.

    Returns:
        A Markdown table.
    """
    rows = []
    for split in SPLITS:
        for contrast in BRATS_CONTRASTS:
            items = brats_slice_datalist(dataset_dir, split, contrast, spatial_size=spatial_size, **options)
            labels = np.array([item["label"] for item in items])
            subjects = sorted({item["subject"] for item in items})
            common = dict(spatial_size=spatial_size, labelled_fraction=labelled_fraction, seed=seed, **options)
            n_labelled = len(brats_slice_datalist(dataset_dir, split, contrast, role="labelled", **common))
            n_unlabelled = len(brats_slice_datalist(dataset_dir, split, contrast, role="unlabelled", **common))
            rows.append(
                [
                    split,
                    contrast,
                    ", ".join(s.replace("brats_2013_", "") for s in subjects),
                    len(items),
                    int(labels.sum()),
                    f"{labels.mean():.3f}",
                    f"{n_labelled} / {n_unlabelled}",
                ]
            )
    header = [
        "split",
        "contrast",
        "subjects",
        "slices",
        "tumour",
        "tumour fraction",
        f"labelled / unlabelled @ {labelled_fraction}",
    ]
    return _table(header, rows)


def pneumonia_summary(dataset_dir: Path, seed: int) -> str:
    """Summarise every split and acquisition domain of the shifted PneumoniaMNIST datalists.

    Args:
        dataset_dir: folder holding ``pneumoniamnist.npz``.
        seed: seed of the domain partition and noise.

    Returns:
        A Markdown table (the ``original`` rows are the unshifted split).
    """
    rows = []
    for split in SPLITS:
        raw = medmnist_datalist(dataset_dir, split)
        groups = {"original": raw} | {d: shifted_medmnist_datalist(dataset_dir, split, d, seed=seed) for d in DOMAINS}
        for name, items in groups.items():
            images = np.stack([item["image"] for item in items])
            labels = np.array([item["label"] for item in items])
            rows.append(
                [split, name, len(items), f"{labels.mean():.3f}", f"{images.mean():.3f}", f"{images.std():.3f}"]
            )
    return _table(["split", "domain", "images", "pneumonia fraction", "mean", "std"], rows)


def save_brats_montage(
    dataset_dir: Path, path: Path, spatial_size: tuple[int, int], columns: int = 8, **options: float
) -> Path:
    """Save the same slices of every split in T1c and FLAIR side by side, tumour outlined in red.

    Args:
        dataset_dir: BraTS dataset folder.
        path: PNG file to write.
        spatial_size: slice size (H, W).
        columns: slices shown per split (evenly spaced over the split's slices).
        options: further keyword arguments of :func:`brats_slice_datalist`.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(split, contrast) for split in SPLITS for contrast in BRATS_CONTRASTS]
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.75 * len(rows)), squeeze=False)
    for r, (split, contrast) in enumerate(rows):
        items = brats_slice_datalist(dataset_dir, split, contrast, spatial_size=spatial_size, **options)
        picks = np.linspace(0, len(items) - 1, columns).round().astype(int)
        for c, i in enumerate(picks):
            item, ax = items[i], axes[r, c]
            ax.imshow(item["image"][0].T, cmap="gray", vmin=-2.5, vmax=4.0)  # rows = y (anterior up), cols = x
            if item["mask"].any():
                ax.contour(item["mask"][0].T, levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(f"{item['subject'][-6:-2]} z{item['slice']} y={int(item['label'])}", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{split}\n{contrast}", fontsize=8)
    fig.suptitle("BraTS axial slices: T1c (source) vs FLAIR (target), tumour outlined; y = tumour present", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_pneumonia_domain_montage(
    dataset_dir: Path, path: Path, split: str = "test", count: int = 8, seed: int = 0
) -> Path:
    """Save the same PneumoniaMNIST X-rays unshifted and under every acquisition shift of ``DOMAINS``.

    For illustration only: the benchmark datalists give each domain a disjoint set of X-rays.

    Args:
        dataset_dir: folder holding ``pneumoniamnist.npz``.
        path: PNG file to write.
        split: split the X-rays come from.
        count: number of X-rays (columns), half normal and half pneumonia.
        seed: seed of the noise.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = medmnist_datalist(dataset_dir, split)
    labels = np.array([item["label"] for item in items])
    chosen = np.concatenate([np.flatnonzero(labels == c)[: (count + 1 - c) // 2] for c in (0, 1)])
    raw = np.stack([items[i]["image"] for i in chosen])
    views = {"original": raw} | {name: shift(raw, chosen.tolist(), seed) for name, shift in DOMAINS.items()}
    fig, axes = plt.subplots(len(views), len(chosen), figsize=(1.3 * len(chosen), 1.45 * len(views)), squeeze=False)
    for r, (name, images) in enumerate(views.items()):
        for c, (image, i) in enumerate(zip(images, chosen.tolist())):
            ax = axes[r, c]
            ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"#{i} {'pneumonia' if labels[i] else 'normal'}", fontsize=6)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(
        "PneumoniaMNIST acquisition domains (same X-rays for illustration; datalists are disjoint)", fontsize=8
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Print the summary tables and optionally save the montages.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DATA, help="shared data folder (brats2015-sample/, pneumoniamnist/)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "_work", help="folder of the PNG montages")
    parser.add_argument("--montage", action="store_true", help="save the PNG montages into --out")
    parser.add_argument("--spatial-size", type=int, default=64, help="BraTS slice size (square)")
    parser.add_argument("--min-brain-fraction", type=float, default=0.05)
    parser.add_argument("--tumour-min-pixels", type=int, default=50)
    parser.add_argument("--labelled-fraction", type=float, default=0.1, help="labelled fraction shown in the table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    brats, pneumonia = args.data / "brats2015-sample", args.data / "pneumoniamnist"
    size = (args.spatial_size, args.spatial_size)
    options = {"min_brain_fraction": args.min_brain_fraction, "tumour_min_pixels": args.tumour_min_pixels}
    print(
        f"## BraTS slices ({brats}, {size[0]}x{size[1]}, min_brain_fraction={args.min_brain_fraction}, "
        f"tumour_min_pixels={args.tumour_min_pixels}, seed={args.seed})\n"
    )
    print(brats_summary(brats, size, args.labelled_fraction, args.seed, **options))
    print(f"\n## PneumoniaMNIST acquisition domains ({pneumonia}, seed={args.seed})\n")
    for name, shift in DOMAINS.items():
        print(f"- {name}: {shift.description}")
    print()
    print(pneumonia_summary(pneumonia, args.seed))
    if args.montage:
        print()
        print("saved", save_brats_montage(brats, args.out / "brats_slices_montage.png", size, **options))
        print(
            "saved",
            save_pneumonia_domain_montage(pneumonia, args.out / "pneumoniamnist_domains_montage.png", seed=args.seed),
        )


if __name__ == "__main__":
    main()
