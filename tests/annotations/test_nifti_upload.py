"""A NIfTI label map uploaded to ``POST /api/tasks/{id}/annotations`` becomes a SEG version that reads back to
the identical array; a label map off the source grid (shifted, flipped, rotated, wrong spacing or shape) is
refused with what differs, and nothing is stored. Real Orthanc, real database."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.nifti_geometry import affine_for, to_nifti_array
from pacslabel.annotations.seg_reading import read_label_array
from tests.annotations.conftest import dciodvfy_errors, sparse_labels
from tests.annotations.test_versions_env import Env, env, stored_dataset  # noqa: F401  (env is a fixture)

SEGMENTS = '{"1": "Liver lesion", "2": "Cyst", "3": "liver"}'


def nifti_bytes(data: np.ndarray, affine: np.ndarray, *, compress: bool = True,
                qform_and_sform: bool = True) -> bytes:
    image = nib.Nifti1Image(data, affine)
    if not qform_and_sform:
        image.set_qform(None, code=0)
        image.set_sform(None, code=0)
    raw = image.to_bytes()
    return gzip.compress(raw) if compress else raw


def upload(environment: Env, data: bytes, *, name: str = "labels.nii.gz", seg_type: str = "BINARY",
           reader: str = "reader1") -> tuple[int, dict[str, object]]:
    study = environment.studies["A"]
    response = environment.client.post(
        f"/api/tasks/{study.task_id}/annotations",
        files={"labels": (name, data, "application/octet-stream")},
        data={"segments": SEGMENTS, "seg_type": seg_type},
        headers=environment.headers[reader],
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(("seg_type", "compress", "dtype"), [
    ("BINARY", True, np.uint8),
    ("LABELMAP", False, np.int16),
    ("BINARY", True, np.float32),  # label maps are often saved as float32 (ITK-SNAP, some pipelines)
])
def test_nifti_label_map_round_trips_exactly_through_a_seg_in_orthanc(env: Env, tmp_path: Path,  # noqa: F811
                                                                     seg_type: str, compress: bool,
                                                                     dtype: type) -> None:
    study = env.studies["A"]
    labels = sparse_labels(study.source.shape)
    data = nifti_bytes(to_nifti_array(labels).astype(dtype), affine_for(study.source), compress=compress)

    status, answer = upload(env, data, name="labels.nii.gz" if compress else "labels.nii", seg_type=seg_type)

    assert status == 201, answer
    version = answer["version"]
    assert isinstance(version, dict) and version["version"] == 1 and version["origin"] == "api"
    stored = stored_dataset(env, str(version["sop_instance_uid"]))
    assert stored.SegmentationType == seg_type and stored.ContentCreatorName == "reader1"
    np.testing.assert_array_equal(read_label_array(stored, study.source), labels)
    assert dciodvfy_errors(stored, tmp_path) == []


def _on_grid(source: SourceSeries) -> tuple[np.ndarray, np.ndarray]:
    return to_nifti_array(sparse_labels(source.shape)), affine_for(source)


def _shifted(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    affine[:3, 3] += [0.0, 0.0, 2.5]
    return nifti_bytes(data, affine)


def _flipped_slices(source: SourceSeries) -> bytes:
    # The same world positions, voxels stored head-to-feet: a reoriented file, which would shift every slice.
    data, affine = _on_grid(source)
    flipped = affine.copy()
    flipped[:3, 2] = -affine[:3, 2]
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 2] * (data.shape[2] - 1)
    return nifti_bytes(data[:, :, ::-1], flipped)


def _flipped_columns(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    flipped = affine.copy()
    flipped[:3, 0] = -affine[:3, 0]
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 0] * (data.shape[0] - 1)
    return nifti_bytes(data[::-1], flipped)


def _rotated(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    rotated = affine.copy()
    rotated[:3, [0, 1]] = affine[:3, [1, 0]]  # rows and columns swapped in the affine only
    return nifti_bytes(data, rotated)


def _wrong_spacing(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    affine[:3, 2] *= 2.0
    return nifti_bytes(data, affine)


def _wrong_shape(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    return nifti_bytes(data[:, :, :-1], affine)


def _not_transposed(source: SourceSeries) -> bytes:
    _, affine = _on_grid(source)
    return nifti_bytes(np.ascontiguousarray(sparse_labels(source.shape)), affine)


def _no_orientation(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    return nifti_bytes(data, affine, qform_and_sform=False)


def _fractional_values(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    return nifti_bytes(data.astype(np.float32) * 0.5, affine)


def _unknown_label(source: SourceSeries) -> bytes:
    data, affine = _on_grid(source)
    data = data.copy()
    data[0, 0, 0] = 9
    return nifti_bytes(data, affine)


def _not_nifti(source: SourceSeries) -> bytes:
    return gzip.compress(b"not a NIfTI header at all" * 40)


MISMATCHES: dict[str, tuple[Callable[[SourceSeries], bytes], str]] = {
    "shifted 2.5 mm": (_shifted, "Shifted: the NIfTI voxel [0, 0, 0] is at (25.20, 25.20, -27.50) mm (RAS), 2.50 mm "
                                 "from the source's first voxel (25.20, 25.20, -30.00) (shift (0.00, 0.00, 2.50) mm"),
    "flipped slices": (_flipped_slices, "Flipped: the NIfTI slice (k) axis points the opposite way of the source "
                                        "series' (the affine's direction (0, 0, -1) RAS, the source's (0, 0, 1))"),
    "flipped columns": (_flipped_columns, "Flipped: the NIfTI column (i) axis points the opposite way"),
    "rotated": (_rotated, "Rotated or permuted axes: the NIfTI direction of the column (i) axis is (0, -1, 0), "
                          "the source's (-1, 0, 0)"),
    "wrong spacing": (_wrong_spacing, "Wrong spacing: the NIfTI voxel size is (0.8, 0.8, 10) mm but the source's "
                                      "is (0.8, 0.8, 5) mm ([column, row, slice] steps; wrong along slice (k)"),
    "wrong shape": (_wrong_shape, "Wrong shape: the NIfTI label map has (64, 64, 11) voxels but the source series "
                                  "needs (64, 64, 12) ([column, row, slice]: 64 columns, 64 rows, 12 slices)."),
    "not transposed": (_not_transposed, "It looks like a (slices, rows, columns) array saved without transposing"),
    "no orientation": (_no_orientation, "has no orientation (qform_code and sform_code are 0)"),
    "fractional values": (_fractional_values, "holds values that are not whole numbers (e.g. 0.5)"),
    "unknown label": (_unknown_label, "holds values [9] that are not known segment numbers [1, 2, 3]"),
    "not NIfTI": (_not_nifti, "The upload is not a NIfTI-1 or NIfTI-2 file (no NIfTI header magic)."),
}


@pytest.mark.parametrize("case", list(MISMATCHES), ids=list(MISMATCHES))
def test_a_label_map_off_the_source_grid_is_refused_precisely_and_nothing_is_stored(env: Env,  # noqa: F811
                                                                                   case: str) -> None:
    make, expected = MISMATCHES[case]
    study = env.studies["A"]
    before = env.orthanc.count_instances()

    status, answer = upload(env, make(study.source))

    assert status == 422, answer
    assert expected in str(answer["detail"]), answer["detail"]
    assert env.orthanc.count_instances() == before
    listed = env.client.get(f"/api/tasks/{study.task_id}/annotations", headers=env.headers["reader1"])
    assert listed.json()["versions"] == []


def test_another_readers_task_takes_no_nifti(env: Env) -> None:  # noqa: F811
    data, affine = _on_grid(env.studies["A"].source)
    status, _ = upload(env, nifti_bytes(data, affine), reader="reader2")
    assert status == 403
