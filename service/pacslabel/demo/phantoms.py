"""Analytic body and head phantoms with lesions, sampled on any slice geometry.

Anatomy is a painter's list of ellipsoids and elliptic cylinders defined in patient millimetres, so CT and MR
series of one study (axial, oblique or coronal) see the same body and the same lesions, and a lesion's centre
and radii in the manifest are exact ground truth for every series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pacslabel.demo.geometry import StackGeometry, Vec3

Contrast = Literal["CT", "T1", "T2"]

# Mean value per tissue: CT in Hounsfield units, MR in stored signal units (12-bit range).
TISSUES: dict[str, dict[Contrast, float]] = {
    "air": {"CT": -1000, "T1": 0, "T2": 0},
    "fat": {"CT": -100, "T1": 1400, "T2": 1000},
    "soft_tissue": {"CT": 45, "T1": 700, "T2": 500},
    "bone": {"CT": 800, "T1": 250, "T2": 150},
    "lung": {"CT": -850, "T1": 60, "T2": 60},
    "liver": {"CT": 60, "T1": 900, "T2": 400},
    "vessel": {"CT": 180, "T1": 200, "T2": 1200},
    "brain": {"CT": 35, "T1": 1000, "T2": 800},
    "csf": {"CT": 5, "T1": 300, "T2": 2500},
    "lesion_hypodense": {"CT": 5, "T1": 450, "T2": 1900},
    "lesion_hyperdense": {"CT": 140, "T1": 1300, "T2": 550},
    "nodule": {"CT": 30, "T1": 700, "T2": 900},
}
TISSUE_INDEX = {name: i for i, name in enumerate(TISSUES)}
NOISE_SIGMA: dict[Contrast, float] = {"CT": 10.0, "T1": 20.0, "T2": 20.0}


@dataclass(frozen=True)
class Shape:
    """An ellipsoid, or (``half_length`` set) an elliptic cylinder along patient z."""

    tissue: str
    center: Vec3
    radii: Vec3
    half_length: float | None = None

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        q = ((x - self.center[0]) / self.radii[0]) ** 2 + ((y - self.center[1]) / self.radii[1]) ** 2
        if self.half_length is None:
            q = q + ((z - self.center[2]) / self.radii[2]) ** 2
            return q <= 1.0
        return (q <= 1.0) & (np.abs(z - self.center[2]) <= self.half_length)

    @property
    def extent(self) -> np.ndarray:
        """Half-sizes of the shape's axis-aligned bounding box."""
        z = self.radii[2] if self.half_length is None else self.half_length
        return np.array([self.radii[0], self.radii[1], z])

    def corners(self) -> np.ndarray:
        """The 8 corners of the bounding box (mm), used to find the pixels a slice needs to test."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        return np.asarray(self.center) + signs * self.extent

    def misses_plane(self, geometry: StackGeometry, index: int) -> bool:
        """True when the plane of slice ``index`` cannot cut the shape (cheap test before any pixel work)."""
        normal = geometry.normal
        offset = abs(float(np.dot(np.asarray(self.center) - geometry.position(index), normal)))
        if self.half_length is None:
            # Support function of an axis-aligned ellipsoid: sqrt(sum((r_i n_i)^2)).
            reach = float(np.sqrt(np.sum((np.asarray(self.radii) * normal) ** 2)))
        else:
            reach = float(np.hypot(self.radii[0] * normal[0], self.radii[1] * normal[1]))
            reach += self.half_length * abs(float(normal[2]))
        return offset > reach

    def same_on_every_slice(self, geometry: StackGeometry) -> bool:
        """A z-cylinder seen by axial slices that all lie within its length looks the same on every slice."""
        if self.half_length is None or not np.allclose(np.abs(geometry.normal), (0.0, 0.0, 1.0)):
            return False
        first, last = geometry.position(0)[2], geometry.position(geometry.slices - 1)[2]
        return max(abs(first - self.center[2]), abs(last - self.center[2])) <= self.half_length


@dataclass(frozen=True)
class LesionSpec:
    """A lesion, placed relative to the anatomy centre; ``lesion_id`` is stable across a patient's studies."""

    lesion_id: str
    label: str
    tissue: str
    offset_mm: Vec3
    radii_mm: Vec3


def _offset(center: Vec3, dx: float, dy: float, dz: float) -> Vec3:
    return (center[0] + dx, center[1] + dy, center[2] + dz)


def body_shapes(c: Vec3) -> list[Shape]:
    """Trunk: fat and skin, a bony ring (ribs), lungs, liver, spine and aorta."""
    long = 400.0
    return [
        Shape("fat", c, (165, 115, 0), long),
        Shape("soft_tissue", c, (152, 104, 0), long),
        Shape("bone", c, (140, 94, 0), long),
        Shape("soft_tissue", c, (131, 86, 0), long),
        Shape("lung", _offset(c, -62, -8, 95), (52, 58, 85)),
        Shape("lung", _offset(c, 62, -8, 95), (52, 58, 85)),
        Shape("liver", _offset(c, -55, 5, -35), (72, 62, 70)),
        Shape("bone", _offset(c, 0, 70, 0), (16, 16, 0), long),
        Shape("vessel", _offset(c, 18, 46, 0), (11, 11, 0), long),
    ]


def head_shapes(c: Vec3) -> list[Shape]:
    """Head: scalp, skull, brain and two ventricles."""
    return [
        Shape("fat", c, (74, 94, 102)),
        Shape("bone", c, (69, 89, 97)),
        Shape("brain", c, (63, 83, 90)),
        Shape("csf", _offset(c, -10, -5, 10), (6, 25, 18)),
        Shape("csf", _offset(c, 10, -5, 10), (6, 25, 18)),
    ]


def lesion_shape(anatomy_center: Vec3, lesion: LesionSpec) -> Shape:
    return Shape(lesion.tissue, lesion_center(anatomy_center, lesion), lesion.radii_mm)


def lesion_center(anatomy_center: Vec3, lesion: LesionSpec) -> Vec3:
    return _offset(anatomy_center, *lesion.offset_mm)


Region = tuple[int, int, int, int]


class PhantomRenderer:
    """Samples a painter's list of shapes on the slices of one stack.

    Only the pixels inside each shape's projected bounding box are tested, shapes that miss a slice are
    skipped, and the masks of shapes that look the same on every slice are computed once: this is what makes
    a 512×512×120 CT render in about a second.
    """

    def __init__(self, shapes: list[Shape], geometry: StackGeometry, rng: np.random.Generator) -> None:
        self.shapes = shapes
        self.geometry = geometry
        self.rng = rng
        self._cache: dict[int, tuple[Region, np.ndarray] | None] = {}
        # Drawing fresh Gaussian noise for every 512×512 slice costs more than everything else together, so
        # each slice takes a randomly offset window of one larger noise field instead.
        shape = (2 * geometry.rows, 2 * geometry.columns)
        self._noise = rng.standard_normal(size=shape, dtype=np.float32)

    def _shape_mask(self, n: int, shape: Shape, index: int) -> tuple[Region, np.ndarray] | None:
        invariant = shape.same_on_every_slice(self.geometry)
        if invariant and n in self._cache:
            return self._cache[n]
        found: tuple[Region, np.ndarray] | None = None
        if not shape.misses_plane(self.geometry, index):
            region = self.geometry.pixel_region(index, shape.corners())
            if region is not None:
                found = region, shape.mask(*self.geometry.patient_coordinates(index, region))
        if invariant:
            self._cache[n] = found
        return found

    def labels(self, index: int) -> np.ndarray:
        """Tissue index of every pixel of slice ``index`` (later shapes paint over earlier ones)."""
        labels = np.full((self.geometry.rows, self.geometry.columns), TISSUE_INDEX["air"], dtype=np.uint8)
        for n, shape in enumerate(self.shapes):
            found = self._shape_mask(n, shape, index)
            if found is not None:
                (row0, row1, col0, col1), mask = found
                labels[row0:row1, col0:col1][mask] = TISSUE_INDEX[shape.tissue]
        return labels

    def render(self, index: int, contrast: Contrast) -> np.ndarray:
        """Slice ``index`` in modality units (HU for CT, signal for MR) with Gaussian noise, float32."""
        lut = np.array([TISSUES[name][contrast] for name in TISSUES], dtype=np.float32)
        image = lut[self.labels(index)]
        rows, columns = image.shape
        row0 = int(self.rng.integers(0, rows))
        col0 = int(self.rng.integers(0, columns))
        image += self._noise[row0 : row0 + rows, col0 : col0 + columns] * np.float32(NOISE_SIGMA[contrast])
        return image
