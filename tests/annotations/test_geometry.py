"""Source geometry from Datasets and from Orthanc's DICOM JSON metadata."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pacslabel.annotations.geometry import SourceSeries, spacing_from_positions
from tests.annotations.sources import PIXEL_SPACING, SLICE_SPACING


def test_slices_are_sorted_along_the_normal_whatever_the_instance_order(source_datasets: list[Dataset]) -> None:
    series = SourceSeries.from_instances(source_datasets)

    offsets = series.slice_offsets
    assert np.all(np.diff(offsets) > 0)
    assert series.shape == (12, 64, 64)
    assert series.spacing == pytest.approx(SLICE_SPACING)
    assert series.pixel_spacing == PIXEL_SPACING
    by_position = sorted(source_datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert series.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in by_position)


def test_dicom_json_metadata_gives_the_same_geometry_as_datasets(source_datasets: list[Dataset]) -> None:
    # Orthanc's /series/{uid}/metadata returns DICOM JSON with pixel data as a BulkDataURI.
    metadata = []
    for ds in source_datasets:
        item = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda _: "http://orthanc/bulk")
        metadata.append(item)

    from_json = SourceSeries.from_instances(metadata)
    from_datasets = SourceSeries.from_instances(source_datasets)

    assert from_json.sop_instance_uids == from_datasets.sop_instance_uids
    np.testing.assert_allclose(from_json.positions, from_datasets.positions)
    assert from_json.frame_of_reference_uid == from_datasets.frame_of_reference_uid
    assert (from_json.rows, from_json.columns) == (64, 64)


def test_spacing_is_the_median_step_so_one_missing_slice_does_not_change_it(source_datasets: list[Dataset]) -> None:
    series = SourceSeries.from_instances(source_datasets)
    with_gap = [ds for ds in series.datasets if ds.SOPInstanceUID != series.sop_instance_uids[5]]

    assert spacing_from_positions(with_gap) == pytest.approx(SLICE_SPACING)
    positions = [[0, 0, 0], [0, 0, 2.5], [0, 0, 5.0]]
    assert spacing_from_positions(positions, [1, 0, 0, 0, 1, 0]) == pytest.approx(2.5)


def test_oblique_spacing_is_measured_along_the_normal_not_along_z() -> None:
    orientation = [1, 0, 0, 0, np.cos(0.5), -np.sin(0.5)]
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [list(normal * 3.0 * k) for k in range(4)]

    assert spacing_from_positions(positions, orientation) == pytest.approx(3.0)


def test_two_instances_at_one_position_are_refused(source_datasets: list[Dataset]) -> None:
    source_datasets[1].ImagePositionPatient = source_datasets[0].ImagePositionPatient

    with pytest.raises(ValueError, match="share one slice position"):
        SourceSeries.from_instances(source_datasets)


def test_instances_of_two_series_are_refused(source_datasets: list[Dataset]) -> None:
    source_datasets[0].SeriesInstanceUID = "1.2.3.4"

    with pytest.raises(ValueError, match="disagree on SeriesInstanceUID"):
        SourceSeries.from_instances(source_datasets)
