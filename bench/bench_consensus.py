"""Consensus and agreement for 5 readers on a 512x512x300 CT with 3 labels (issue: review and consensus, < 2 s).

One run = majority vote + STAPLE + Dice/HD95 for every reader pair and label (10 pairs x 3 labels). The
readers' label arrays are synthetic but shaped like real reads: an organ-sized ellipsoid (label 1), a tumour
inside it (label 2) and a separate lesion (label 3), each reader with their own centre shift, size error and a
smooth wavy boundary. Foreground is about 3 % of the volume. Medians of ``--runs`` runs are reported.

    .venv/bin/python bench/bench_consensus.py
    .venv/bin/python bench/bench_consensus.py --runs 5 --readers 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pacslabel.review import majority_vote, pairwise_agreement, staple

SHAPE = (300, 512, 512)
SPACING = (1.25, 0.78, 0.78)
TARGET_S = 2.0

# label, centre (voxels), semi-axes (voxels); label 2 is drawn after label 1, inside it.
BLOBS = [
    (1, (150.0, 280.0, 200.0), (48.0, 95.0, 115.0)),
    (2, (160.0, 300.0, 230.0), (14.0, 24.0, 22.0)),
    (3, (120.0, 240.0, 400.0), (28.0, 40.0, 36.0)),
]


def _paint_blob(
    out: np.ndarray, label: int, centre: tuple[float, ...], axes: tuple[float, ...], rng: np.random.Generator
) -> None:
    """An ellipsoid with a reader's shift, scale and a smooth radial wave, painted on its bounding box only."""
    shift = rng.normal(0.0, 1.5, 3)
    scale = rng.normal(1.0, 0.04, 3)
    c = np.asarray(centre) + shift
    a = np.asarray(axes) * scale
    reach = np.ceil(a * 1.15).astype(int) + 1
    lo = np.maximum(np.floor(c).astype(int) - reach, 0)
    hi = np.minimum(np.floor(c).astype(int) + reach + 1, SHAPE)
    z, y, x = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    dz, dy, dx = (z - c[0]) / a[0], (y - c[1]) / a[1], (x - c[2]) / a[2]
    radius = np.sqrt(dz * dz + dy * dy + dx * dx)
    phase = rng.uniform(0.0, 2 * np.pi, 2)
    theta = np.arctan2(dy, dx)
    wave = 1.0 + 0.05 * np.sin(3 * theta + phase[0]) * np.cos(2 * np.pi * dz + phase[1])
    inside = radius <= wave
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][inside] = label


def make_reads(readers: int, seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    reads = {}
    for r in range(readers):
        labels = np.zeros(SHAPE, dtype=np.uint8)
        for label, centre, axes in BLOBS:
            _paint_blob(labels, label, centre, axes, rng)
        reads[f"reader{r + 1}"] = labels
    return reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--runs", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--readers", type=int, default=5)
    args = parser.parse_args(argv)

    reads = make_reads(args.readers)
    fg = statistics.mean(float(np.count_nonzero(a)) / a.size for a in reads.values())
    print(f"{args.readers} readers, {SHAPE} uint8, spacing {SPACING} mm, foreground {100 * fg:.1f} % of the volume")

    steps: dict[str, list[float]] = {"majority": [], "staple": [], "pairwise": [], "total": []}
    for _ in range(args.runs):
        t0 = time.perf_counter()
        majority = majority_vote(reads)
        t1 = time.perf_counter()
        result = staple(reads)
        t2 = time.perf_counter()
        pairs = pairwise_agreement(reads, SPACING, labels=[1, 2, 3])
        t3 = time.perf_counter()
        steps["majority"].append(t1 - t0)
        steps["staple"].append(t2 - t1)
        steps["pairwise"].append(t3 - t2)
        steps["total"].append(t3 - t0)

    for name, times in steps.items():
        print(f"  {name:<9} median {statistics.median(times):6.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times)})")
    agree = float(np.mean(majority.labels == result.labels))
    print(f"  STAPLE: {result.iterations} iterations; voxels where STAPLE == majority: {100 * agree:.3f} %")
    for label in (1, 2, 3):
        values = [p for p in pairs if p.label == label]
        print(
            f"  label {label}: Dice {min(p.dice for p in values):.3f}-{max(p.dice for p in values):.3f}, "
            f"HD95 {min(p.hd95_mm for p in values):.2f}-{max(p.hd95_mm for p in values):.2f} mm"
        )
    total = statistics.median(steps["total"])
    verdict = "met" if total < TARGET_S else "NOT met"
    print(f"total median {total:.3f} s vs target {TARGET_S:.1f} s: {verdict} ({total / TARGET_S:.2f} of the budget)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
