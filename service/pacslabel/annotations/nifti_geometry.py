"""NIfTI geometry of a source series: the voxel-to-world affine (RAS) and the axis order of NIfTI arrays.

pacslabel holds label arrays as ``(slices, rows, columns)`` on the source's slice grid (sorted along the slice
normal, :class:`~pacslabel.annotations.geometry.SourceSeries`). NIfTI tools (nibabel, MONAI, ITK-SNAP) index
``[i, j, k]`` with ``i`` along a row (the column index), ``j`` down the columns (the row index) and ``k`` the
slice, so a NIfTI data array is the transpose ``[column, row, slice]``.

DICOM positions are in LPS (x to the patient's left, y to posterior); NIfTI's world is RAS, so the first two
world axes change sign. The affine maps ``(i, j, k, 1)`` to RAS millimetres:

    LPS(i, j, k) = IPP_0 + i * PixelSpacing[1] * row_cosines + j * PixelSpacing[0] * column_cosines
                   + k * slice_step
    RAS = diag(-1, -1, 1) @ LPS

``slice_step`` is the vector from the first to the last slice position divided by ``slices - 1`` (so an
oblique or gantry-tilted stack keeps its true direction); a single slice steps along the normal by its
SliceThickness.

Used by the NIfTI export (label maps and images) and by NIfTI upload (reading a label map back onto the grid).
"""

from __future__ import annotations

import numpy as np

from pacslabel.annotations.geometry import SourceSeries

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_step(source: SourceSeries) -> np.ndarray:
    """The LPS vector (mm) from one slice to the next, in the source's sorted slice order."""
    positions = np.asarray(source.positions, dtype=np.float64)
    if len(positions) > 1:
        return (positions[-1] - positions[0]) / (len(positions) - 1)
    return source.normal * float(source.spacing)


def lps_affine_for(source: SourceSeries) -> np.ndarray:
    """The 4x4 affine from NIfTI voxel indices ``[column, row, slice]`` to DICOM patient (LPS) coordinates."""
    orientation = np.asarray(source.orientation, dtype=np.float64)
    row_cosines, column_cosines = orientation[:3], orientation[3:]
    row_spacing, column_spacing = source.pixel_spacing  # PixelSpacing: (between rows, between columns)
    affine = np.eye(4)
    affine[:3, 0] = row_cosines * column_spacing  # i: next column, along the row direction
    affine[:3, 1] = column_cosines * row_spacing  # j: next row, along the column direction
    affine[:3, 2] = slice_step(source)
    affine[:3, 3] = np.asarray(source.positions[0], dtype=np.float64)
    return affine


def affine_for(source: SourceSeries) -> np.ndarray:
    """The 4x4 NIfTI affine (RAS) of a data array indexed ``[column, row, slice]`` on ``source``'s grid."""
    return LPS_TO_RAS @ lps_affine_for(source)


def to_nifti_array(volume_slices_rows_cols: np.ndarray) -> np.ndarray:
    """A ``(slices, rows, columns)`` array as a NIfTI data array ``[column, row, slice]`` (a transposed view)."""
    volume = np.asarray(volume_slices_rows_cols)
    if volume.ndim != 3:
        raise ValueError(f"A volume must have 3 dimensions (slices, rows, columns), not {volume.ndim}.")
    return np.transpose(volume, (2, 1, 0))


def from_nifti_array(nifti_columns_rows_slices: np.ndarray) -> np.ndarray:
    """A NIfTI data array ``[column, row, slice]`` as a ``(slices, rows, columns)`` array (a transposed view)."""
    data = np.asarray(nifti_columns_rows_slices)
    if data.ndim == 4 and data.shape[3] == 1:  # some writers add a singleton time axis
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"A NIfTI label map must have 3 dimensions (column, row, slice), not {data.ndim}.")
    return np.transpose(data, (2, 1, 0))


__all__ = ["LPS_TO_RAS", "affine_for", "from_nifti_array", "lps_affine_for", "slice_step", "to_nifti_array"]
