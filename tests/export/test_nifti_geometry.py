"""The NIfTI affine of a source series, checked voxel by voxel against the DICOM geometry (no Orthanc)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.nifti_geometry import affine_for, from_nifti_array, to_nifti_array
from tests.annotations.sources import make_ct_series
from tests.export.snapshot_world import COLUMN_COSINES, PIXEL_SPACING, ROW_COSINES, SLICE_SPACING, oblique_series


def _dicom_ras(source: SourceSeries, column: int, row: int, slice_: int) -> np.ndarray:
    """Where pixel (row, column) of slice ``slice_`` is, by PS3.3 C.7.6.2.1.1, in RAS."""
    ds = source.datasets[slice_]
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    lps = ipp + column * column_spacing * iop[:3] + row * row_spacing * iop[3:]
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("shuffle", [False, True])
def test_affine_maps_every_corner_voxel_to_its_dicom_position_on_an_oblique_grid(shuffle: bool) -> None:
    datasets = oblique_series(slices=5, rows=12, columns=20, seed=3)
    if shuffle:  # instances arrive in any order; the grid is sorted along the normal
        datasets = [datasets[i] for i in (3, 0, 4, 1, 2)]
    source = SourceSeries.from_instances(datasets)
    affine = affine_for(source)
    for column in (0, 19):
        for row in (0, 11):
            for slice_ in (0, 2, 4):
                voxel = affine @ np.array([column, row, slice_, 1.0])
                np.testing.assert_allclose(voxel[:3], _dicom_ras(source, column, row, slice_), atol=1e-5)
    # Spacing and orientation as nibabel reads them from the header of a written image.
    image = nib.Nifti1Image(np.zeros((20, 12, 5), np.int16), affine)
    np.testing.assert_allclose(image.header.get_zooms(), (PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING))
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    flip = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(directions[:, 0], ROW_COSINES * flip, atol=1e-7)
    np.testing.assert_allclose(directions[:, 1], COLUMN_COSINES * flip, atol=1e-7)
    np.testing.assert_allclose(directions[:, 2], np.cross(ROW_COSINES, COLUMN_COSINES) * flip, atol=1e-7)


def test_axial_head_first_supine_series_is_lpi_to_ras_as_dcm2niix_writes_it() -> None:
    source = SourceSeries.from_instances(make_ct_series(slices=4, rows=8, columns=10))
    affine = affine_for(source)
    # Columns run to the patient's left (-R), rows to posterior (-A), slices to superior (+S).
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    np.testing.assert_allclose(affine[:3, 3], [25.2, 25.2, -30.0])
    np.testing.assert_allclose(np.diag(affine)[:3], [-0.8, -0.8, 5.0])


def test_single_slice_steps_along_the_normal_by_its_thickness() -> None:
    source = SourceSeries.from_instances(oblique_series(slices=1, rows=4, columns=6, seed=1))
    np.testing.assert_allclose(affine_for(source)[:3, 2],
                               np.cross(ROW_COSINES, COLUMN_COSINES) * SLICE_SPACING * np.array([-1, -1, 1]))


def test_nifti_array_order_round_trips_and_rejects_other_shapes() -> None:
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (slices, rows, columns)
    nifti = to_nifti_array(volume)
    assert nifti.shape == (4, 3, 2) and nifti[3, 2, 1] == volume[1, 2, 3]
    np.testing.assert_array_equal(from_nifti_array(nifti), volume)
    np.testing.assert_array_equal(from_nifti_array(nifti[..., np.newaxis]), volume)  # a singleton 4th axis
    with pytest.raises(ValueError, match="3 dimensions"):
        to_nifti_array(volume[0])
    with pytest.raises(ValueError, match="3 dimensions"):
        from_nifti_array(np.zeros((2, 2, 2, 2)))
