"""Consensus and agreement for 5 readers on a 512x512x300 CT with 3 labels (issue: review and consensus, < 2 s).

One run = majority vote + STAPLE + Dice/HD95 for every reader pair and label (10 pairs x 3 labels). The
readers' label arrays are synthetic but shaped like real reads: an organ-sized ellipsoid (label 1), a tumour
inside it (label 2) and a separate lesion (label 3), each reader with their own centre shift, size error and a
smooth wavy boundary. Foreground is about 3 % of the volume. Medians of ``--runs`` runs are reported, as wall
time and as this process's CPU time (the machine is shared: CPU time is less disturbed by other jobs).

Anchor, in the same run: the straightforward pairwise path (scipy's ``binary_erosion`` for the surfaces and
one ``distance_transform_edt`` per reader and label on the label's bounding box, then ``np.percentile``),
which must give the same Dice and HD95 values (checked to 1e-9).

    .venv/bin/python bench/bench_consensus.py
    .venv/bin/python bench/bench_consensus.py --runs 5 --readers 5 --anchor-runs 0
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import ndimage

from pacslabel.review import foreground_bounding_box, majority_vote, pairwise_agreement, staple

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


def straightforward_pairwise(
    reads: dict[str, np.ndarray], spacing: tuple[float, float, float], labels: list[int]
) -> list[tuple[int, str, str, float, float]]:
    """The anchor: scipy's erosion and EDT, one transform per reader and label, as a textbook would do it."""
    names = list(reads)
    out = []
    for label in labels:
        masks = [reads[n] == label for n in names]
        box = foreground_bounding_box(masks)
        assert box is not None
        # Cropping is exact: every surface voxel lies in the box, and the voxels outside it are background.
        crops = [m[box] for m in masks]
        surfaces = [c & ~ndimage.binary_erosion(c) for c in crops]
        transforms = [ndimage.distance_transform_edt(~s, sampling=spacing) for s in surfaces]
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                total = np.count_nonzero(crops[i]) + np.count_nonzero(crops[j])
                dice = 2.0 * np.count_nonzero(crops[i] & crops[j]) / total
                forward = np.percentile(transforms[j][surfaces[i]], 95)
                backward = np.percentile(transforms[i][surfaces[j]], 95)
                out.append((label, names[i], names[j], float(dice), float(max(forward, backward))))
    return out


def _timed(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _line(name: str, wall: list[float], cpu: list[float]) -> str:
    runs = ", ".join(f"{t:.3f}" for t in wall)
    return (
        f"  {name:<9} wall median {statistics.median(wall):6.3f} s   cpu median {statistics.median(cpu):6.3f} s"
        f"   (wall runs: {runs})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--runs", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--readers", type=int, default=5)
    parser.add_argument("--anchor-runs", type=int, default=1, help="runs of the scipy EDT anchor (0: skip it)")
    parser.add_argument("--workers", type=int, default=None, help="threads for pairwise_agreement (default: CPUs)")
    args = parser.parse_args(argv)

    reads = make_reads(args.readers)
    fg = statistics.mean(float(np.count_nonzero(a)) / a.size for a in reads.values())
    print(f"{args.readers} readers, {SHAPE} uint8, spacing {SPACING} mm, foreground {100 * fg:.1f} % of the volume")

    wall: dict[str, list[float]] = {"majority": [], "staple": [], "pairwise": [], "total": []}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    for _ in range(args.runs):
        majority, w1, c1 = _timed(majority_vote, reads)
        result, w2, c2 = _timed(staple, reads)
        pairs, w3, c3 = _timed(pairwise_agreement, reads, SPACING, labels=[1, 2, 3], workers=args.workers)
        for name, w, c in (("majority", w1, c1), ("staple", w2, c2), ("pairwise", w3, c3)):
            wall[name].append(w)
            cpu[name].append(c)
        wall["total"].append(w1 + w2 + w3)
        cpu["total"].append(c1 + c2 + c3)

    for name in wall:
        print(_line(name, wall[name], cpu[name]))
    agree = float(np.mean(majority.labels == result.labels))
    print(f"  STAPLE: {result.iterations} iterations; voxels where STAPLE == majority: {100 * agree:.3f} %")
    for label in (1, 2, 3):
        values = [p for p in pairs if p.label == label]
        print(
            f"  label {label}: Dice {min(p.dice for p in values):.3f}-{max(p.dice for p in values):.3f}, "
            f"HD95 {min(p.hd95_mm for p in values):.2f}-{max(p.hd95_mm for p in values):.2f} mm"
        )
    total = statistics.median(wall["total"])
    verdict = "met" if total < TARGET_S else "NOT met"
    print(f"total median {total:.3f} s vs target {TARGET_S:.1f} s: {verdict} ({total / TARGET_S:.2f} of the budget)")

    if args.anchor_runs:
        anchor_wall, anchor_cpu = [], []
        for _ in range(args.anchor_runs):
            expected, w, c = _timed(straightforward_pairwise, reads, SPACING, [1, 2, 3])
            anchor_wall.append(w)
            anchor_cpu.append(c)
        got = [(p.label, p.reader_a, p.reader_b, p.dice, p.hd95_mm) for p in pairs]
        assert [g[:3] for g in got] == [e[:3] for e in expected]
        worst = max(max(abs(g[3] - e[3]), abs(g[4] - e[4])) for g, e in zip(got, expected, strict=True))
        print(_line("anchor", anchor_wall, anchor_cpu) + "  (scipy EDT pairwise path)")
        ratio_wall = statistics.median(anchor_wall) / statistics.median(wall["pairwise"])
        ratio_cpu = statistics.median(anchor_cpu) / statistics.median(cpu["pairwise"])
        print(
            f"pairwise vs anchor: {ratio_wall:.1f}x faster (wall), {ratio_cpu:.1f}x (cpu); "
            f"largest Dice/HD95 difference {worst:.2e}"
        )
        if worst > 1e-9:
            print("ANCHOR MISMATCH")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
