"""NIfTI export of a snapshot: each source series as ``images/<stem>.nii.gz``, each final SEG as a label map
``labels/<stem>.nii.gz`` on the same grid (values = the protocol's label numbers), and a MONAI datalist.

The affine comes from the DICOM geometry (:mod:`pacslabel.annotations.nifti_geometry`: LPS -> RAS, data
indexed ``[column, row, slice]``). Images hold modality values (Rescale Slope/Intercept applied; integers stay
integers). Every DICOM object is checked against the snapshot's SHA-256 before it is converted, so a NIfTI
export is exactly the snapshot's data. Files are gzip'ed with a zero mtime: the same snapshot gives the same
bytes.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import nibabel as nib
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.nifti_geometry import affine_for, to_nifti_array
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.errors import Conflict
from pacslabel.export.datalist import DATALIST_NAME, DatalistEntry, build_datalist, datalist_bytes
from pacslabel.export.manifest import fetch_verified, fetch_verified_many
from pacslabel.orthanc.client import OrthancClient

GZIP_LEVEL = 1  # label maps and CT compress well already at level 1; higher levels cost 3-5x the time
Progress = Callable[[int], None]  # called with the number of DICOM instances just processed


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def nifti_bytes(array_slices_rows_cols: np.ndarray, source: SourceSeries) -> bytes:
    """A ``.nii.gz`` of a ``(slices, rows, columns)`` array on ``source``'s grid (qform = sform = scanner)."""
    affine = affine_for(source)
    image = nib.Nifti1Image(np.ascontiguousarray(to_nifti_array(array_slices_rows_cols)), affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip_bytes(image.to_bytes())


def modality_volume(datasets: Sequence[Dataset]) -> np.ndarray:
    """Stored pixels of sorted single-frame slices as modality values, (slices, rows, columns).

    Integer slopes and intercepts keep an integer type (int16 when the values fit), others give float32.
    """
    slopes = [float(ds.get("RescaleSlope", 1) or 1) for ds in datasets]
    intercepts = [float(ds.get("RescaleIntercept", 0) or 0) for ds in datasets]
    raw = np.stack([ds.pixel_array for ds in datasets])
    if all(s == 1 for s in slopes) and all(i == int(i) for i in intercepts):
        values = raw.astype(np.int32) + np.asarray(intercepts, dtype=np.int32)[:, None, None]
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        fits = np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max
        return values.astype(np.int16) if fits else values
    return (raw.astype(np.float32) * np.asarray(slopes, dtype=np.float32)[:, None, None]
            + np.asarray(intercepts, dtype=np.float32)[:, None, None])


def protocol_label_map(seg: Dataset, source: SourceSeries, segments: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The SEG as a label map on ``source``'s grid, renumbered to the protocol's label numbers."""
    labels = read_label_array(seg, source)
    numbers = {int(s["number"]): s.get("protocol_number") for s in segments}
    unknown = sorted(f"{n} {s['label']!r}" for s in segments if (n := int(s["number"])) and numbers[n] is None)
    if unknown:
        raise Conflict(f"SEG {seg.SOPInstanceUID} has segments that are not protocol labels: {', '.join(unknown)}")
    top = max((int(v) for v in numbers.values() if v is not None), default=0)
    out = np.zeros(labels.shape, dtype=np.uint8 if top <= 255 else np.uint16)
    for number, protocol_number in numbers.items():
        out[labels == number] = int(protocol_number or 0)
    return out


@dataclass(frozen=True)
class ExportFile:
    """One file of an export (a DICOM object, a NIfTI file, the datalist)."""

    path: str  # relative POSIX path inside the export
    data: bytes


def _series_datasets(orthanc: OrthancClient, series: Mapping[str, Any], progress: Progress | None) -> list[Dataset]:
    datasets = []
    pairs = [(instance["sop_instance_uid"], instance["sha256"]) for instance in series["instances"]]
    for data in fetch_verified_many(orthanc, pairs):
        datasets.append(dcmread(BytesIO(data)))
        if progress is not None:
            progress(1)
    return datasets


@dataclass(frozen=True)
class _Volume:
    """A volume to be written as ``path`` on ``source``'s grid."""

    path: str
    array: np.ndarray  # (slices, rows, columns)
    source: SourceSeries

    def encode(self) -> ExportFile:
        return ExportFile(self.path, nifti_bytes(self.array, self.source))


def _item_labels(item: Mapping[str, Any], progress: Progress | None) -> dict[str, list[Mapping[str, Any]]]:
    """The item's SEG labels by the source series they are drawn on."""
    labels_by_series: dict[str, list[Mapping[str, Any]]] = {}
    series_uids = [series["series_instance_uid"] for series in item["source_series"]]
    for label in item["labels"]:
        if label["modality"] != "SEG":
            if progress is not None:
                progress(1)  # an SR has no voxels; it is in the DICOM export
            continue
        referenced = label.get("source_series_instance_uid")
        if referenced is None and len(series_uids) == 1:
            referenced = series_uids[0]
        if referenced not in series_uids:
            raise Conflict(f"SEG {label['sop_instance_uid']} of item {item['item_id']} is not drawn on one of the "
                           "item's source series; it has no grid to be exported on")
        labels_by_series.setdefault(str(referenced), []).append(label)
    return labels_by_series


def _volumes(orthanc: OrthancClient, document: Mapping[str, Any], entries: list[DatalistEntry],
             progress: Progress | None) -> Iterator[_Volume]:
    """Images and label maps, item by item, in export order; fills ``entries`` for the datalist."""
    for item in document["items"]:
        stem = f"{_safe(item['patient_pseudonym'])}_item{int(item['item_id'])}"
        labels_by_series = _item_labels(item, progress)
        for series in item["source_series"]:
            series_uid = series["series_instance_uid"]
            name = f"{stem}_{_safe(series_uid)}"
            source = SourceSeries.from_instances(_series_datasets(orthanc, series, progress))
            image_path = f"images/{name}.nii.gz"
            yield _Volume(image_path, modality_volume(source.datasets), source)
            series_labels = labels_by_series.get(series_uid, [])
            if not series_labels:
                entries.append(DatalistEntry(item["split"], image_path, None))
            for index, label in enumerate(series_labels):
                seg = dcmread(BytesIO(fetch_verified(orthanc, label["sop_instance_uid"], label["sha256"])))
                label_path = f"labels/{name}.nii.gz" if index == 0 else f"labels/{name}_{index + 1}.nii.gz"
                yield _Volume(label_path, protocol_label_map(seg, source, label["segments"]), source)
                entries.append(DatalistEntry(item["split"], image_path, label_path))
                if progress is not None:
                    progress(1)


def iter_nifti_export(
    orthanc: OrthancClient,
    document: Mapping[str, Any],
    *,
    progress: Progress | None = None,
) -> Iterator[ExportFile]:
    """The files of a NIfTI export of a parsed manifest, item by item, then ``dataset.json``.

    Each volume is encoded (nibabel + gzip, which releases the GIL) in a worker while the next series is
    fetched and decoded, so at most two volumes are in memory at a time.
    """
    entries: list[DatalistEntry] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nifti-encode") as encoder:
        pending: Future[ExportFile] | None = None
        for volume in _volumes(orthanc, document, entries, progress):
            submitted = encoder.submit(volume.encode)
            if pending is not None:
                yield pending.result()
            pending = submitted
        if pending is not None:
            yield pending.result()
    datalist = build_datalist(entries, document["protocol"]["labels"], name=document["snapshot"]["name"],
                              description=f"pacslabel snapshot {document['snapshot']['name']} of project "
                                          f"{document['project']['slug']}")
    yield ExportFile(DATALIST_NAME, datalist_bytes(datalist))
