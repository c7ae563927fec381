"""Slice-stack geometry in the DICOM patient coordinate system (LPS, millimetres).

A stack is defined by its centre, the row and column direction cosines, the pixel spacing and the distance
between slices. Slice ``k`` lies at ``first_position + k * slice_spacing * normal`` with
``normal = row_direction x column_direction``, which is how viewers and SEG writers reconstruct the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Vec3 = tuple[float, float, float]

# DS values are limited to 16 characters; 4 decimals (0.1 µm) is far below any meaningful precision.
_POSITION_DECIMALS = 4


@dataclass(frozen=True)
class StackGeometry:
    rows: int
    columns: int
    slices: int
    row_direction: Vec3  # direction in which the column index grows (along a row)
    column_direction: Vec3  # direction in which the row index grows (down a column)
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns)
    slice_spacing: float
    slice_thickness: float
    center_mm: Vec3

    @cached_property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def orientation(self) -> list[float]:
        """ImageOrientationPatient (row cosines then column cosines)."""
        return [*self.row_direction, *self.column_direction]

    def first_position(self) -> np.ndarray:
        """Centre of the first pixel of the first slice, placed so the stack is centred on ``center_mm``."""
        return self._first_position.copy()

    @cached_property
    def _first_position(self) -> np.ndarray:
        row_dir = np.asarray(self.row_direction)
        col_dir = np.asarray(self.column_direction)
        return (
            np.asarray(self.center_mm)
            - row_dir * self.pixel_spacing[1] * (self.columns - 1) / 2
            - col_dir * self.pixel_spacing[0] * (self.rows - 1) / 2
            - self.normal * self.slice_spacing * (self.slices - 1) / 2
        )

    def position(self, index: int) -> np.ndarray:
        """Exact ImagePositionPatient of slice ``index`` (0-based)."""
        return self._first_position + self.normal * self.slice_spacing * index

    def position_ds(self, index: int) -> list[float]:
        """ImagePositionPatient rounded so that each value fits a DS."""
        return [round(float(v), _POSITION_DECIMALS) + 0.0 for v in self.position(index)]

    def slice_location(self, index: int) -> float:
        return round(float(np.dot(self.position(index), self.normal)), _POSITION_DECIMALS) + 0.0

    def patient_coordinates(
        self, index: int, region: tuple[int, int, int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y, z (mm, float32) of the pixel centres of slice ``index``, optionally only inside
        ``region = (row0, row1, col0, col1)`` (half-open), each shaped (rows, columns) of that region."""
        row0, row1, col0, col1 = region or (0, self.rows, 0, self.columns)
        origin = self.position(index)
        rows = np.arange(row0, row1, dtype=np.float32)[:, None] * np.float32(self.pixel_spacing[0])
        cols = np.arange(col0, col1, dtype=np.float32)[None, :] * np.float32(self.pixel_spacing[1])
        coords = []
        for axis in range(3):
            coords.append(
                np.float32(origin[axis])
                + np.float32(self.column_direction[axis]) * rows
                + np.float32(self.row_direction[axis]) * cols
            )
        return coords[0], coords[1], coords[2]

    def pixel_region(self, index: int, corners: np.ndarray) -> tuple[int, int, int, int] | None:
        """The (row0, row1, col0, col1) rectangle of slice ``index`` covering the in-plane projection of the
        points ``corners`` (N x 3, mm), or None when it falls outside the image."""
        relative = corners - self.position(index)
        rows = relative @ np.asarray(self.column_direction) / self.pixel_spacing[0]
        cols = relative @ np.asarray(self.row_direction) / self.pixel_spacing[1]
        row0, row1 = max(0, int(np.floor(rows.min()))), min(self.rows, int(np.ceil(rows.max())) + 1)
        col0, col1 = max(0, int(np.floor(cols.min()))), min(self.columns, int(np.ceil(cols.max())) + 1)
        if row0 >= row1 or col0 >= col1:
            return None
        return row0, row1, col0, col1

    def intersecting_slices(self, center: Vec3, radii: Vec3) -> list[int]:
        """0-based indices of the slices whose plane cuts an axis-aligned ellipsoid."""
        # The support function of an axis-aligned ellipsoid along unit vector n is sqrt(sum((r_i n_i)^2)).
        normal = self.normal
        reach = float(np.sqrt(np.sum((np.asarray(radii) * normal) ** 2)))
        offset0 = float(np.dot(np.asarray(center) - self.first_position(), normal))
        return [k for k in range(self.slices) if abs(offset0 - k * self.slice_spacing) <= reach]
