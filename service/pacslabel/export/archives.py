"""Download formats of a snapshot: the DICOM objects as a patient/study/series folder tree (on disk or in a
zip), the NIfTI export in a zip, each streamed file by file.

Zips are written to a non-seekable sink (local headers with data descriptors) and drained after every file,
so a download never holds more than one object in memory. Entries carry a fixed timestamp: the same snapshot
gives the same zip bytes.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pacslabel.export.manifest import fetch_verified_many, manifest_objects
from pacslabel.export.nifti import ExportFile, Progress, iter_nifti_export
from pacslabel.orthanc.client import OrthancClient

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip time: no build time in the archive
DICOM_DEFLATE_LEVEL = 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def iter_dicom_files(
    orthanc: OrthancClient,
    document: Mapping[str, Any],
    *,
    progress: Progress | None = None,
) -> Iterator[ExportFile]:
    """``<patient pseudonym>/<study UID>/<series UID>/<SOP instance UID>.dcm`` for every manifest object,
    its bytes checked against the manifest's SHA-256."""
    objects = manifest_objects(document)
    contents = fetch_verified_many(orthanc, ((obj.sop_instance_uid, obj.sha256) for obj in objects))
    for obj, data in zip(objects, contents, strict=True):
        path = (f"{_safe(obj.patient_pseudonym)}/{obj.study_instance_uid}/{obj.series_instance_uid}/"
                f"{obj.sop_instance_uid}.dcm")
        yield ExportFile(path, data)
        if progress is not None:
            progress(1)


class _Sink(io.RawIOBase):
    """A write-only, non-seekable byte sink that zipfile streams into and the caller drains."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._offset = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._offset += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._offset

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def iter_zip(files: Iterable[ExportFile], *, manifest: bytes, deflate: bool) -> Iterator[bytes]:
    """A zip of ``manifest.json`` and ``files``, as chunks (one or more per file)."""
    sink = _Sink()
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(sink, "w", compression=compression, compresslevel=DICOM_DEFLATE_LEVEL if deflate else None,
                         allowZip64=True) as archive:
        archive.writestr(_entry(MANIFEST_NAME, compression), manifest)
        yield sink.drain()
        for file in files:
            archive.writestr(_entry(file.path, compression), file.data)
            yield sink.drain()
    yield sink.drain()


def _entry(path: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(path, date_time=ZIP_EPOCH)
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def dicom_zip(orthanc: OrthancClient, document: Mapping[str, Any], manifest: bytes, *,
              progress: Progress | None = None) -> Iterator[bytes]:
    return iter_zip(iter_dicom_files(orthanc, document, progress=progress), manifest=manifest, deflate=True)


def nifti_zip(orthanc: OrthancClient, document: Mapping[str, Any], manifest: bytes, *,
              progress: Progress | None = None) -> Iterator[bytes]:
    # .nii.gz is compressed already: stored, not deflated again.
    return iter_zip(iter_nifti_export(orthanc, document, progress=progress), manifest=manifest, deflate=False)


def write_tree(files: Iterable[ExportFile], out_dir: Path, *, manifest: bytes) -> int:
    """Write ``manifest.json`` and ``files`` below ``out_dir``; returns the bytes written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).write_bytes(manifest)
    total = len(manifest)
    root = out_dir.resolve()
    for file in files:
        target = (out_dir / file.path).resolve()
        if root not in target.parents:  # names come from UIDs and pseudonyms; never write outside out_dir
            raise ValueError(f"refusing to write {file.path!r} outside {out_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.data)
        total += len(file.data)
    return total



def download_to(orthanc: OrthancClient, document: Mapping[str, Any], manifest: bytes, export_format: str,
                out_dir: Path, *, progress: Progress | None = None) -> tuple[Path, int]:
    """Write a snapshot download below ``out_dir``; returns (the zip file or folder written, bytes written).

    ``dicom-zip`` -> ``<name>-dicom.zip``; ``dicom-tree`` -> ``<name>-dicom/<patient>/<study>/<series>/``;
    ``nifti`` -> ``<name>-nifti/`` with ``images/``, ``labels/``, ``dataset.json``; ``nifti-zip`` the same
    zipped. Each also holds ``manifest.json``.
    """
    name = _safe(str(document["snapshot"]["name"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    if export_format in ("dicom-zip", "nifti-zip"):
        kind = export_format.split("-")[0]
        target = out_dir / f"{name}-{kind}.zip"
        build = dicom_zip if kind == "dicom" else nifti_zip
        total = 0
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as handle:
            for chunk in build(orthanc, document, manifest, progress=progress):
                handle.write(chunk)
                total += len(chunk)
        partial.replace(target)  # a complete zip or none: an interrupted download leaves only the .part
        return target, total
    if export_format == "dicom-tree":
        folder = out_dir / f"{name}-dicom"
        return folder, write_tree(iter_dicom_files(orthanc, document, progress=progress), folder, manifest=manifest)
    if export_format == "nifti":
        folder = out_dir / f"{name}-nifti"
        return folder, write_tree(iter_nifti_export(orthanc, document, progress=progress), folder, manifest=manifest)
    raise ValueError(f"Unknown export format {export_format!r}; use dicom-zip, dicom-tree, nifti or nifti-zip.")


__all__ = ["MANIFEST_NAME", "dicom_zip", "download_to", "iter_dicom_files", "iter_zip", "nifti_zip",
           "write_tree"]
