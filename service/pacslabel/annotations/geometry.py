"""Geometry of a source series: the slice grid every SEG frame must land on.

A source series is read either from pydicom Datasets (files, C-STORE) or from the DICOM JSON that Orthanc's
``/series/{uid}/metadata`` (DICOMweb) returns; both become one :class:`SourceSeries` whose slices are sorted
along the slice normal (``row cosines x column cosines``), which is how SEG writers and viewers stack them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from pacslabel.annotations.errors import AnnotationRejected

logger = logging.getLogger(__name__)

SourceItem = Dataset | Mapping[str, Any]

# Two orientations whose direction cosines differ by less than this are the same orientation.
ORIENTATION_TOLERANCE = 1e-4


def as_dataset(item: SourceItem) -> Dataset:
    """Return ``item`` as a Dataset; DICOM JSON (a dict keyed by tags such as ``"00200032"``) is decoded.

    BulkDataURI values (pixel data in DICOMweb metadata) are left out: geometry never needs them.
    """
    if isinstance(item, Dataset):
        return item
    if isinstance(item, Mapping):
        return Dataset.from_json(dict(item), bulk_data_uri_handler=lambda *_: b"")
    raise TypeError(f"A source instance must be a pydicom Dataset or a DICOM JSON dict, not {type(item).__name__}.")


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane: the cross product of the row and column direction cosines."""
    values = np.asarray([float(v) for v in orientation], dtype=np.float64)
    if values.shape != (6,):
        raise ValueError(f"ImageOrientationPatient must have 6 values, got {values.size}.")
    normal = np.cross(values[:3], values[3:])
    length = float(np.linalg.norm(normal))
    if length < 1e-6:
        raise ValueError("ImageOrientationPatient row and column cosines are parallel; there is no slice normal.")
    return normal / length


def spacing_from_positions(
    items: Iterable[SourceItem] | Sequence[Sequence[float]],
    orientation: Sequence[float] | None = None,
) -> float:
    """Median distance between consecutive slices along the slice normal, in mm.

    ``items`` are source instances (Datasets or DICOM JSON), or bare ImagePositionPatient triplets together
    with ``orientation``. The median (not the mean or the first step) keeps one missing slice from changing
    the answer. A single slice has no spacing: its SliceThickness is returned instead, when known.
    """
    items = list(items)
    if not items:
        raise ValueError("At least one source instance is required to compute the slice spacing.")
    if isinstance(items[0], Dataset | Mapping):
        datasets = [as_dataset(item) for item in items]  # type: ignore[arg-type]
        positions = [ds.ImagePositionPatient for ds in datasets]
        orientation = orientation or datasets[0].ImageOrientationPatient
    else:
        datasets = []
        positions = items  # type: ignore[assignment]
        if orientation is None:
            raise ValueError("The orientation is required when bare positions are given.")
    offsets = np.sort(np.asarray(positions, dtype=np.float64) @ slice_normal(orientation))
    steps = np.diff(offsets)
    if steps.size == 0:
        if datasets and "SliceThickness" in datasets[0]:
            return float(datasets[0].SliceThickness)
        raise ValueError("A single slice without SliceThickness has no slice spacing.")
    return float(np.median(steps))


@dataclass(frozen=True)
class SourceSeries:
    """The slice grid of one single-frame source series (CT, MR, ...), sorted along the slice normal.

    Build it with :meth:`from_instances`; the constructor is for already-checked values.
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_id: str | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    orientation: tuple[float, float, float, float, float, float]
    positions: np.ndarray  # (slices, 3) ImagePositionPatient, sorted along the normal
    sop_instance_uids: tuple[str, ...]  # same order as positions
    sop_class_uids: tuple[str, ...]
    datasets: tuple[Dataset, ...]  # same order as positions

    @classmethod
    def from_instances(cls, items: Iterable[SourceItem]) -> SourceSeries:
        """Read the geometry of a series from Datasets or DICOM JSON dicts (one per instance).

        Raises
        ------
        ValueError
            When the instances are not one series of parallel, equally sized slices with distinct positions.
        """
        datasets = [as_dataset(item) for item in items]
        if not datasets:
            raise ValueError("A source series needs at least one instance.")
        for keyword in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "Rows",
            "Columns",
        ):
            missing = [i for i, ds in enumerate(datasets) if keyword not in ds]
            if missing:
                raise ValueError(f"Source instance {missing[0]} has no {keyword}; its geometry is unknown.")
        if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
            raise ValueError("Multi-frame source images are not supported; the source must be single-frame slices.")
        first = datasets[0]
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
            values = {ds[keyword].value for ds in datasets}
            if len(values) > 1:
                raise ValueError(f"Source instances disagree on {keyword}: {sorted(map(str, values))}.")
        orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
        for ds in datasets[1:]:
            if np.max(np.abs(np.asarray(ds.ImageOrientationPatient, dtype=np.float64) - orientation)) > (
                ORIENTATION_TOLERANCE
            ):
                raise ValueError(f"Source instance {ds.SOPInstanceUID} has a different ImageOrientationPatient.")
        normal = slice_normal(orientation)
        positions = np.asarray([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
        order = np.argsort(positions @ normal, kind="stable")
        positions = positions[order]
        datasets = [datasets[i] for i in order]
        if len(datasets) > 1 and np.min(np.diff(positions @ normal)) < 1e-3:
            raise ValueError("Two source instances share one slice position; the slice grid is ambiguous.")
        sop_uids = tuple(str(ds.SOPInstanceUID) for ds in datasets)
        if len(set(sop_uids)) != len(sop_uids):
            raise ValueError("A SOPInstanceUID occurs twice in the source series.")
        return cls(
            study_instance_uid=str(first.StudyInstanceUID),
            series_instance_uid=str(first.SeriesInstanceUID),
            frame_of_reference_uid=str(first.FrameOfReferenceUID),
            study_id=str(first.StudyID) if first.get("StudyID") else None,
            rows=int(first.Rows),
            columns=int(first.Columns),
            pixel_spacing=(float(first.PixelSpacing[0]), float(first.PixelSpacing[1])),
            slice_thickness=float(first.SliceThickness) if first.get("SliceThickness") not in (None, "") else None,
            orientation=tuple(float(v) for v in orientation),  # type: ignore[arg-type]
            positions=positions,
            sop_instance_uids=sop_uids,
            sop_class_uids=tuple(str(ds.SOPClassUID) for ds in datasets if "SOPClassUID" in ds),
            datasets=tuple(datasets),
        )

    @property
    def number_of_slices(self) -> int:
        return len(self.sop_instance_uids)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, columns): the shape of a label array on this grid."""
        return (self.number_of_slices, self.rows, self.columns)

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.orientation)

    @property
    def slice_offsets(self) -> np.ndarray:
        """Position of each slice along the normal, in mm, ascending."""
        return self.positions @ self.normal

    @property
    def spacing(self) -> float:
        """Median slice step along the normal (SliceThickness for a single slice)."""
        if self.number_of_slices == 1:
            if self.slice_thickness is None:
                raise ValueError("A single-slice source without SliceThickness has no slice spacing.")
            return self.slice_thickness
        return float(np.median(np.diff(self.slice_offsets)))

    def index_of_sop_instance(self, sop_instance_uid: str) -> int | None:
        try:
            return self.sop_instance_uids.index(str(sop_instance_uid))
        except ValueError:
            return None

    def nearest_slice(self, position: Sequence[float]) -> tuple[int, float]:
        """Index of the slice whose ImagePositionPatient is closest to ``position`` and the 3-D distance in mm.

        The full 3-D distance (not only the distance along the normal) is used so that an in-plane shift of a
        frame is caught as well as a through-plane one.
        """
        distances = np.linalg.norm(self.positions - np.asarray(position, dtype=np.float64), axis=1)
        index = int(np.argmin(distances))
        return index, float(distances[index])

    def slice_index_of(self, position: Sequence[float], *, tolerance_mm: float) -> int:
        """The slice index at ``position``, or :class:`AnnotationRejected` when it is off the grid."""
        index, distance = self.nearest_slice(position)
        if distance > tolerance_mm:
            raise AnnotationRejected(
                f"Shifted geometry: position {format_position(position)} is {distance:.2f} mm from the nearest "
                f"source slice (tolerance {tolerance_mm} mm)."
            )
        return index


def format_position(position: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in position) + ")"
