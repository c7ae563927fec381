"""A small synthetic CT series with real geometry, built in memory (no downloads, no demo dependency)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from tests.fixtures.series import AXIAL, ct_series, random_pixels

# 5 mm slices: a +2.5 mm shift lands exactly half-way between two slices (2.5 mm from the nearest).
SLICE_SPACING = 5.0
PIXEL_SPACING = (0.8, 0.8)
ORIENTATION = list(AXIAL)


def make_ct_series(
    *,
    slices: int = 12,
    rows: int = 64,
    columns: int = 64,
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    with_pixels: bool = True,
    shuffle: bool = True,
) -> list[Dataset]:
    """Axial CT slices (Datasets) of one series; returned out of order unless ``shuffle`` is False.

    Out of order on purpose: real series come from Orthanc in instance order, not in position order.
    """
    return ct_series(
        slices=slices, rows=rows, columns=columns, pixels=random_pixels(7, -100, 100, rows, columns) if with_pixels
        else None, study_instance_uid=study_instance_uid, frame_of_reference_uid=frame_of_reference_uid,
        origin=(-25.2, -25.2, -30.0), pixel_spacing=PIXEL_SPACING, slice_spacing=SLICE_SPACING, slice_location=True,
        shuffle_seed=3 if shuffle else None, series_number=2, rescale_intercept=0,
        SpecificCharacterSet="ISO_IR 100", Manufacturer="pacslabel-tests", PositionReferenceIndicator="",
        PatientPosition="HFS", AcquisitionNumber=1, RescaleType="HU")
