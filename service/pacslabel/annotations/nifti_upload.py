"""A NIfTI label map (``.nii`` / ``.nii.gz``) uploaded as a task's segmentation.

The label map must lie on the task's source grid exactly: its shape is ``[column, row, slice]`` of the source
series and its affine is :func:`~pacslabel.annotations.nifti_geometry.affine_for` the source, within a
tolerance. Anything else is refused with what differs (shape, spacing, a flipped or rotated axis, a shift),
never resampled: invariant 3, an annotation is not moved. The voxels then take the ``.npy`` path
(``check_label_array``, highdicom) so both uploads build the same SEG.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from sqlalchemy.orm import Session

from pacslabel.annotations import repository
from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.annotations.nifti_geometry import affine_for, from_nifti_array
from pacslabel.annotations.seg_building import SegType, check_label_array
from pacslabel.annotations.service import find_task, save_label_array, task_source
from pacslabel.orthanc.client import OrthancClient
from pacslabel.tasks.models import Task
from pacslabel.users.models import User

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
# The voxel grid must be the source's: 0.01 mm like SEG frame positions (seg_validation), and direction
# cosines to 1e-3 (~0.06 degrees). float32 affines (NIfTI's sform) hold positions to ~1e-5 mm.
ORIGIN_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-3
AXES = ("column (i)", "row (j)", "slice (k)")
HEADER_ALLOWANCE = 1024 * 1024  # header and extensions beyond the voxels, when bounding a .nii.gz


def is_nifti(data: bytes) -> bool:
    """Whether ``data`` looks like a NIfTI-1/2 file (gzip-compressed or not): decided by the bytes, not the name."""
    head = data[:540]
    if head[:2] == GZIP_MAGIC:
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:4096], 540)
        except zlib.error:
            return False
    return _nifti_version(head) is not None


def _nifti_version(head: bytes) -> int | None:
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(f"{order}i", head)[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
            return 1
        if len(head) >= 540 and struct.unpack_from(f"{order}i", head)[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
            return 2
    return None


def _uncompressed(data: bytes, limit: int) -> bytes:
    if data[:2] != GZIP_MAGIC:
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise AnnotationRejected(f"The .nii.gz upload is not valid gzip data ({error}).") from error
    if len(raw) > limit:
        raise AnnotationRejected(f"The .nii.gz upload inflates to more than {limit} bytes, more than any label map "
                                 "of this source series can hold.")
    return raw


def read_nifti(data: bytes, *, limit: int) -> nib.Nifti1Image | nib.Nifti2Image:
    """The NIfTI image in ``data`` (``.nii`` or ``.nii.gz`` bytes, at most ``limit`` bytes uncompressed)."""
    raw = _uncompressed(data, limit)
    version = _nifti_version(raw[:540])
    if version is None:
        raise AnnotationRejected("The upload is not a NIfTI-1 or NIfTI-2 file (no NIfTI header magic).")
    if raw[344:347] == b"ni1" or raw[4:7] == b"ni2":
        raise AnnotationRejected("The upload is the header of a .hdr/.img pair; send a single-file .nii or .nii.gz.")
    image_class = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    try:
        return image_class.from_bytes(raw)
    except Exception as error:  # nibabel raises several types for broken headers and short data
        raise AnnotationRejected(f"The NIfTI file cannot be read ({type(error).__name__}: {str(error)[:200]}).") \
            from error


def _vector(values: np.ndarray) -> str:
    """Direction cosines and voxel sizes: 4 significant digits, float32 noise (and -0) rounded away."""
    return "(" + ", ".join(f"{round(float(v), 6) + 0.0:.4g}" for v in values) + ")"


def _mm(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{round(float(v), 2) + 0.0:.2f}" for v in values) + ")"


@dataclass(frozen=True)
class GridMismatch:
    """What differs between a NIfTI grid and the source's (for a test or a log); the message says it all."""

    message: str


def grid_mismatch(shape: Sequence[int], affine: np.ndarray, source: SourceSeries) -> GridMismatch | None:
    """The first way the NIfTI grid (data shape, RAS affine) differs from ``source``'s, or None if it fits.

    Checked in this order: shape, voxel spacing, axis directions (flipped, else rotated or permuted), origin.
    """
    expected_shape = (source.columns, source.rows, source.number_of_slices)
    found_shape = tuple(int(n) for n in shape)
    if found_shape != expected_shape:
        hint = ""
        if found_shape == expected_shape[::-1]:
            hint = (" It looks like a (slices, rows, columns) array saved without transposing: NIfTI data are "
                    "indexed [column, row, slice].")
        return GridMismatch(f"Wrong shape: the NIfTI label map has {found_shape} voxels but the source series needs "
                            f"{expected_shape} ([column, row, slice]: {source.columns} columns, {source.rows} rows, "
                            f"{source.number_of_slices} slices).{hint}")
    expected = affine_for(source)
    found = np.asarray(affine, dtype=np.float64)
    expected_spacing = np.linalg.norm(expected[:3, :3], axis=0)
    found_spacing = np.linalg.norm(found[:3, :3], axis=0)
    if np.max(np.abs(found_spacing - expected_spacing)) > SPACING_TOLERANCE_MM:
        wrong = [AXES[axis] for axis in range(3)
                 if abs(found_spacing[axis] - expected_spacing[axis]) > SPACING_TOLERANCE_MM]
        return GridMismatch(f"Wrong spacing: the NIfTI voxel size is {_vector(found_spacing)} mm but the source's is "
                            f"{_vector(expected_spacing)} mm ([column, row, slice] steps; wrong along "
                            f"{', '.join(wrong)}; tolerance {SPACING_TOLERANCE_MM} mm).")
    expected_directions = expected[:3, :3] / expected_spacing
    found_directions = found[:3, :3] / found_spacing
    flipped = [AXES[axis] for axis in range(3)
               if float(found_directions[:, axis] @ expected_directions[:, axis]) < -1 + DIRECTION_TOLERANCE]
    if flipped:
        return GridMismatch(f"Flipped: the NIfTI {' and '.join(flipped)} axis points the opposite way of the source "
                            "series' (the affine's direction "
                            f"{'; '.join(_vector(found_directions[:, AXES.index(a)]) for a in flipped)} RAS, the "
                            f"source's {'; '.join(_vector(expected_directions[:, AXES.index(a)]) for a in flipped)}). "
                            "Save the label map in the source's voxel order instead of reorienting it.")
    turned = [axis for axis in range(3)
              if np.max(np.abs(found_directions[:, axis] - expected_directions[:, axis])) > DIRECTION_TOLERANCE]
    if turned:
        return GridMismatch(
            "Rotated or permuted axes: the NIfTI direction of the "
            + "; ".join(f"{AXES[axis]} axis is {_vector(found_directions[:, axis])}, the source's "
                        f"{_vector(expected_directions[:, axis])}" for axis in turned)
            + f" (RAS; tolerance {DIRECTION_TOLERANCE}).")
    shift = found[:3, 3] - expected[:3, 3]
    distance = float(np.linalg.norm(shift))
    if distance > ORIGIN_TOLERANCE_MM:
        return GridMismatch(f"Shifted: the NIfTI voxel [0, 0, 0] is at {_mm(found[:3, 3])} mm (RAS), "
                            f"{distance:.2f} mm from the source's first voxel {_mm(expected[:3, 3])} "
                            f"(shift {_mm(shift)} mm; tolerance {ORIGIN_TOLERANCE_MM} mm).")
    return None


def _integer_labels(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        return data
    if not np.issubdtype(data.dtype, np.floating):
        raise AnnotationRejected(f"The NIfTI label map must hold integer labels, not {data.dtype} values.")
    # Label maps are often stored as float32 (or scaled by scl_slope): fine while every value is a whole number.
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        bad = data[~np.isfinite(data) | (data != np.round(data))]
        raise AnnotationRejected(f"The NIfTI label map holds values that are not whole numbers (e.g. "
                                 f"{float(bad.flat[0])}); a label map holds segment numbers.")
    return data.astype(np.int64)


def label_array_from_nifti(data: bytes, source: SourceSeries, segment_numbers: Sequence[int]) -> np.ndarray:
    """Read a NIfTI label map, check its grid against ``source`` and return it as (slices, rows, columns).

    Raises
    ------
    AnnotationRejected
        When the bytes are not NIfTI, the grid differs (shape, spacing, flip, rotation, shift), the image has
        no orientation, or the values are not segment numbers.
    """
    limit = source.number_of_slices * source.rows * source.columns * 8 + HEADER_ALLOWANCE
    image = read_nifti(data, limit=limit)
    header = image.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise AnnotationRejected("The NIfTI label map has no orientation (qform_code and sform_code are 0), so it "
                                 "cannot be placed on the source series.")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise AnnotationRejected(f"A NIfTI label map must have 3 dimensions [column, row, slice], not shape {shape}.")
    mismatch = grid_mismatch(shape, image.affine, source)
    if mismatch is not None:
        raise AnnotationRejected(mismatch.message)
    voxels = _integer_labels(np.asanyarray(image.dataobj))
    labels = np.ascontiguousarray(from_nifti_array(voxels))
    return check_label_array(labels, source, segment_numbers)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def save_nifti_label_map(
    session: Session,
    orthanc_client: OrthancClient,
    user: User,
    task: Task,
    nifti: bytes,
    segments: Mapping[str | int, str],
    *,
    seg_type: SegType = "BINARY",
    series_uid: str | None = None,
    fixes: int | None = None,
) -> AnnotationVersion:
    """Check a NIfTI label map against the task's source grid and save it as a SEG version (the .npy path)."""
    study_uid = repository.study_uid_of(session, repository.item_of(session, task))
    find_task(session, user, study_uid, task)  # refuse someone else's or a closed task before reading the upload
    item, _, source = task_source(session, orthanc_client, task, series_uid)
    series_uid = series_uid or str(item.series_uids[0])
    numbers = []
    for key in segments:
        try:
            numbers.append(int(key))
        except (TypeError, ValueError) as error:
            raise AnnotationRejected(f"Segment map key {key!r} is not a segment number.") from error
    labels = label_array_from_nifti(nifti, source, numbers)
    # The .npy path builds and saves the SEG (task checks, protocol labels, highdicom, versioning) exactly as
    # for a .npy upload; the array is handed over losslessly as .npy bytes.
    return save_label_array(session, orthanc_client, user, task, _npy(labels), segments, seg_type=seg_type,
                            series_uid=series_uid, fixes=fixes)


__all__ = ["GZIP_MAGIC", "grid_mismatch", "is_nifti", "label_array_from_nifti", "read_nifti", "save_nifti_label_map"]
