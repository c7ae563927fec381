"""Dice and HD95 against independent computations: analytic cubes and spheres, brute-force cdist, scipy's EDT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from pacslabel.review import (
    dice,
    hausdorff_distance_95,
    intra_rater_agreement,
    label_agreement,
    pairwise_agreement,
    surface_distances,
)
from pacslabel.review.surface_distance import LabelSurfaces

SPACING = (2.5, 0.7, 0.9)


def _cube(shape: tuple[int, int, int], corner: tuple[int, int, int], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    z, y, x = corner
    mask[z : z + size, y : y + size, x : x + size] = True
    return mask


def _brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Independent: scipy's erosion for the surfaces, every pairwise distance, MONAI's max of directed P95."""
    surface_a = np.argwhere(a & ~ndimage.binary_erosion(a)) * np.asarray(spacing)
    surface_b = np.argwhere(b & ~ndimage.binary_erosion(b)) * np.asarray(spacing)
    distances = cdist(surface_a, surface_b)
    return max(float(np.percentile(distances.min(axis=1), 95)), float(np.percentile(distances.min(axis=0), 95)))


def _straightforward_hd(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], percentile: float = 95.0) -> float:
    """Independent: scipy's erosion and a distance transform of the whole grid, MONAI's max of directed P95."""
    surface_a = a & ~ndimage.binary_erosion(a)
    surface_b = b & ~ndimage.binary_erosion(b)
    forward = ndimage.distance_transform_edt(~surface_b, sampling=spacing)[surface_a]
    backward = ndimage.distance_transform_edt(~surface_a, sampling=spacing)[surface_b]
    return max(float(np.percentile(forward, percentile)), float(np.percentile(backward, percentile)))


def _ball_mm(shape: tuple[int, int, int], spacing: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """The voxels whose centre lies within ``radius_mm`` of the grid's centre, in mm."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [(n - 1) / 2 for n in shape]
    r2 = ((z - c[0]) * spacing[0]) ** 2 + ((y - c[1]) * spacing[1]) ** 2 + ((x - c[2]) * spacing[2]) ** 2
    return r2 <= radius_mm**2


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((x - centre[2]) / axes[2]) ** 2 <= 1


@pytest.mark.parametrize(("axis", "shift"), [(0, 1), (0, 3), (1, 2), (2, 4)])
def test_cubes_shifted_by_k_voxels_give_the_analytic_dice_and_the_shift_in_mm_as_hd95(axis: int, shift: int) -> None:
    size = 12
    shape = (40, 40, 40)
    a = _cube(shape, (10, 10, 10), size)
    corner = [10, 10, 10]
    corner[axis] += shift
    b = _cube(shape, tuple(corner), size)  # type: ignore[arg-type]

    assert dice(a, b) == pytest.approx((size - shift) / size, abs=1e-12)
    # Every surface voxel of B lies at least `shift` slices/rows/cols beyond A's leading face, whose whole face
    # (1/6 of the surface > 5 %) is exactly that far away; nothing is farther.
    assert hausdorff_distance_95(a, b, SPACING) == pytest.approx(shift * SPACING[axis], abs=1e-9)
    assert hausdorff_distance_95(a, b, SPACING) == pytest.approx(_brute_force_hd95(a, b, SPACING), abs=1e-9)


def test_ellipsoids_match_a_brute_force_point_set_distance_with_anisotropic_spacing() -> None:
    rng = np.random.default_rng(3)
    shape = (18, 30, 28)
    for _ in range(6):
        a = _ellipsoid(shape, rng.uniform(7, 14, 3), rng.uniform(3, 8, 3))
        b = _ellipsoid(shape, rng.uniform(7, 14, 3), rng.uniform(3, 8, 3))
        spacing = tuple(rng.uniform(0.4, 3.0, 3))
        assert hausdorff_distance_95(a, b, spacing) == pytest.approx(_brute_force_hd95(a, b, spacing), abs=1e-9)
        expected_dice = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        assert dice(a, b) == pytest.approx(expected_dice)


def test_surface_distances_equal_the_distance_transform_of_the_other_surface() -> None:
    rng = np.random.default_rng(5)
    for trial in range(8):
        shape = tuple(int(n) for n in rng.integers(6, 30, 3))
        spacing = tuple(rng.uniform(0.3, 5.0, 3))
        a = ndimage.binary_opening(rng.random(shape) < 0.55) if trial % 2 else rng.random(shape) < 0.03
        b = rng.random(shape) < 0.05
        surface_a = a ^ ndimage.binary_erosion(a)
        surface_b = b ^ ndimage.binary_erosion(b)
        forward, backward = surface_distances(a, b, spacing)
        np.testing.assert_allclose(forward, ndimage.distance_transform_edt(~surface_b, sampling=spacing)[surface_a])
        np.testing.assert_allclose(backward, ndimage.distance_transform_edt(~surface_a, sampling=spacing)[surface_b])


def test_far_apart_masks_beyond_the_offset_search_are_measured_exactly() -> None:
    shape = (20, 200, 200)
    a = _cube(shape, (5, 5, 5), 6)
    b = _cube(shape, (8, 150, 170), 4)
    assert hausdorff_distance_95(a, b, SPACING) == pytest.approx(_brute_force_hd95(a, b, SPACING), abs=1e-9)
    assert dice(a, b) == 0.0


def test_masks_touching_the_grid_edge_have_a_surface_there() -> None:
    a = np.zeros((6, 10, 10), dtype=bool)
    a[:, :5, :] = True  # fills the grid edge on four sides
    b = np.zeros_like(a)
    b[:, :7, :] = True
    assert hausdorff_distance_95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(_brute_force_hd95(a, b, (1.0, 1.0, 1.0)))


def test_empty_masks_follow_the_documented_conventions() -> None:
    empty = np.zeros((5, 6, 7), dtype=bool)
    full = _cube((5, 6, 7), (1, 1, 1), 3)
    assert dice(empty, empty) == 1.0
    assert hausdorff_distance_95(empty, empty, SPACING) == 0.0
    assert dice(empty, full) == 0.0
    assert hausdorff_distance_95(full, empty, SPACING) == math.inf
    assert hausdorff_distance_95(empty, full, SPACING) == math.inf
    forward, backward = surface_distances(full, empty, SPACING)
    assert backward.size == 0 and np.all(np.isinf(forward)) and forward.size > 0


def test_pairwise_agreement_reports_every_pair_and_label_with_the_single_pair_values() -> None:
    shape = (20, 32, 32)
    rng = np.random.default_rng(8)
    reads = {}
    for name in ("ann", "bob", "cyd"):
        labels = np.zeros(shape, dtype=np.uint8)
        labels[_ellipsoid(shape, np.array([10, 12, 12]) + rng.normal(0, 1, 3), np.array([6, 8, 8]))] = 1
        labels[_ellipsoid(shape, np.array([10, 24, 24]) + rng.normal(0, 1, 3), np.array([3, 4, 4]))] = 2
        reads[name] = labels
    result = pairwise_agreement(reads, SPACING, labels=[1, 2, 3])

    assert [(p.label, p.reader_a, p.reader_b) for p in result] == [
        (label, a, b) for label in (1, 2, 3) for a, b in (("ann", "bob"), ("ann", "cyd"), ("bob", "cyd"))
    ]
    for p in result:
        a, b = reads[p.reader_a] == p.label, reads[p.reader_b] == p.label
        if p.label == 3:  # nobody drew it: the readers agree that it is absent
            assert (p.dice, p.hd95_mm) == (1.0, 0.0)
            continue
        assert p.dice == pytest.approx(dice(a, b))
        assert p.hd95_mm == pytest.approx(_brute_force_hd95(a, b, SPACING), abs=1e-9)
    assert pairwise_agreement(reads, SPACING, workers=1) == [p for p in result if p.label != 3]


def test_a_label_missing_in_one_read_gives_dice_zero_and_infinite_hd95() -> None:
    first = np.zeros((8, 16, 16), dtype=np.uint8)
    first[2:6, 3:9, 3:9] = 1
    first[2:6, 10:14, 10:14] = 2
    repeat = first.copy()
    repeat[repeat == 2] = 0
    by_label = {a.label: a for a in intra_rater_agreement(first, repeat, SPACING)}
    assert (by_label[1].dice, by_label[1].hd95_mm) == (1.0, 0.0)
    assert (by_label[2].dice, by_label[2].hd95_mm) == (0.0, math.inf)
    assert label_agreement(first, repeat, SPACING) == intra_rater_agreement(first, repeat, SPACING)


def test_mismatched_grids_and_bad_spacing_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        pairwise_agreement({"a": np.zeros((2, 3, 4), np.uint8), "b": np.zeros((2, 3, 5), np.uint8)}, SPACING)
    with pytest.raises(ValueError, match="spacing"):
        hausdorff_distance_95(np.ones((2, 3, 4), bool), np.ones((2, 3, 4), bool), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="integer"):
        pairwise_agreement({"a": np.zeros((2, 3, 4)), "b": np.zeros((2, 3, 4))}, SPACING)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.25, 0.78, 0.78), (0.8, 0.8, 2.0)])
def test_concentric_spheres_are_their_difference_in_radius_apart(spacing: tuple[float, float, float]) -> None:
    shape = tuple(int(math.ceil(34 / s)) for s in spacing)
    inner, outer = _ball_mm(shape, spacing, 10.0), _ball_mm(shape, spacing, 14.0)  # type: ignore[arg-type]
    hd95 = hausdorff_distance_95(inner, outer, spacing)
    assert hd95 == pytest.approx(_brute_force_hd95(inner, outer, spacing), abs=1e-9)
    # Surface voxel centres lie within one voxel (the largest spacing) inside their sphere, and each has a
    # surface voxel of the other sphere within half a voxel diagonal of the radial line: the 4 mm gap moves by
    # less than that on the grid.
    diagonal = math.sqrt(sum(s * s for s in spacing))
    assert 4.0 - max(spacing) < hd95 < 4.0 + diagonal
    assert dice(inner, outer) == pytest.approx(2 * inner.sum() / (inner.sum() + outer.sum()))


def _random_reads(rng: np.random.Generator, shape: tuple[int, int, int], readers: int) -> dict[str, np.ndarray]:
    """Readers' label arrays: two overlapping blobs of labels 1 and 2 with reader-specific shifts and speckle."""
    reads = {}
    for r in range(readers):
        labels = np.zeros(shape, dtype=np.uint8)
        centre = np.array(shape) / 2 + rng.normal(0, 1.5, 3)
        labels[_ellipsoid(shape, centre, np.array(shape) * rng.uniform(0.2, 0.35, 3))] = 1
        labels[_ellipsoid(shape, centre + rng.normal(0, 2, 3), np.array(shape) * rng.uniform(0.08, 0.15, 3))] = 2
        labels[(rng.random(shape) < 0.002)] = 2  # isolated voxels: surfaces far from the blob's
        reads[f"r{r}"] = labels
    return reads


# Spacings whose finest axis (the line axis of the search) is each of the three, isotropic, and microscopy-like
# (the search's padding is capped in voxels there).
@pytest.mark.parametrize(
    "spacing",
    [(1.25, 0.78, 0.78), (0.6, 1.9, 1.1), (2.5, 0.9, 0.45), (1.0, 1.0, 1.0), (3.0, 0.7, 0.7), (0.02, 0.01, 0.015)],
)
def test_pairwise_agreement_equals_the_straightforward_edt_path_on_random_anisotropic_reads(
    spacing: tuple[float, float, float],
) -> None:
    rng = np.random.default_rng(int(sum(spacing) * 100))
    shape = (22, 36, 30)
    reads = _random_reads(rng, shape, readers=4)
    result = pairwise_agreement(reads, spacing, labels=[1, 2, 3], workers=2)
    assert result == pairwise_agreement(reads, spacing, labels=[1, 2, 3], workers=1)
    assert len(result) == 3 * 6
    for p in result:
        a, b = reads[p.reader_a] == p.label, reads[p.reader_b] == p.label
        if p.label == 3:
            assert (p.dice, p.hd95_mm) == (1.0, 0.0)
            continue
        assert p.dice == 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        assert p.hd95_mm == pytest.approx(_straightforward_hd(a, b, spacing), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("percentile", [0.0, 5.0, 50.0, 95.0, 99.5, 100.0])
def test_every_percentile_is_exact_although_the_search_stops_at_its_rank(percentile: float) -> None:
    rng = np.random.default_rng(int(percentile) + 17)
    spacing = (1.7, 0.6, 0.8)
    reads = _random_reads(rng, (20, 40, 34), readers=2)
    a, b = reads["r0"] == 1, reads["r1"] == 1
    expected = _straightforward_hd(a, b, spacing, percentile)
    assert hausdorff_distance_95(a, b, spacing, percentile=percentile) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(_brute_force_hd95_at(a, b, spacing, percentile), rel=1e-12)


def _brute_force_hd95_at(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], percentile: float) -> float:
    surface_a = np.argwhere(a & ~ndimage.binary_erosion(a)) * np.asarray(spacing)
    surface_b = np.argwhere(b & ~ndimage.binary_erosion(b)) * np.asarray(spacing)
    distances = cdist(surface_a, surface_b)
    forward, backward = distances.min(axis=1), distances.min(axis=0)
    return max(float(np.percentile(forward, percentile)), float(np.percentile(backward, percentile)))


def test_points_beyond_the_search_reach_are_measured_exactly_when_the_percentile_needs_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A: a cube that overlaps B and a small cube ~65 mm away along a plane axis, beyond the 12 mm that the
    # plane search covers. The far cube holds ~10 % of A's surface: A's P95 lies among the far points (k-d
    # tree), its P50 among the near ones (no tree).
    shape = (24, 40, 120)
    spacing = (1.5, 0.7, 0.9)
    a = _cube(shape, (4, 4, 4), 10) | _cube(shape, (6, 10, 90), 4)
    b = _cube(shape, (5, 6, 6), 8)
    trees = []
    original = LabelSurfaces._tree
    monkeypatch.setattr(LabelSurfaces, "_tree", lambda self, target: trees.append(target) or original(self, target))
    for percentile, uses_tree in ((50.0, False), (95.0, True), (100.0, True)):
        trees.clear()
        expected = _brute_force_hd95_at(a, b, spacing, percentile)
        assert hausdorff_distance_95(a, b, spacing, percentile=percentile) == pytest.approx(expected, rel=1e-12)
        assert bool(trees) == uses_tree
    forward, _ = surface_distances(a, b, spacing)
    assert forward.max() > 60.0
    np.testing.assert_allclose(forward, _edt_at_surface(a, b, spacing), rtol=1e-12)


def _edt_at_surface(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    surface_a = a & ~ndimage.binary_erosion(a)
    surface_b = b & ~ndimage.binary_erosion(b)
    return ndimage.distance_transform_edt(~surface_b, sampling=spacing)[surface_a]


def test_negative_label_values_are_refused() -> None:
    reads = {"a": np.zeros((4, 5, 6), np.int16), "b": np.zeros((4, 5, 6), np.int16)}
    reads["a"][1, 2, 3] = -2
    with pytest.raises(ValueError, match="negative"):
        pairwise_agreement(reads, SPACING)
