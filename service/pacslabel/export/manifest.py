"""The snapshot manifest: an immutable, versioned description of a released dataset (canonical JSON).

What it holds, per released item (``export.released``): split, patient pseudonym, study, every source
instance (series, SOP Instance UID, SHA-256, size) and the final label object(s) with their provenance
(single read / arbitration: the annotation version, its author role and version number; consensus: the
consensus result, its method and its input versions), the segments of each label SEG and the source series
it was drawn on. Around the items: the snapshot's name, parent and whether the test split is in it, the
protocol version and its labels (the label numbers of NIfTI label maps), the de-identification profile and
options, and counts per split and label.

Canonical bytes: ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8, lists in
a fixed order (items by id, series and instances by UID), and no time of building. Building the manifest of
the same items again gives the same bytes, which is how a stored snapshot is verified
(:func:`pacslabel.export.snapshots.rebuild_manifest`).

Checksums: annotation versions carry the SHA-256 of their stored bytes; every other object (source images,
consensus SEGs) is hashed once from Orthanc's bytes and cached by SOP Instance UID (``export_object_hashes``);
Orthanc keeps the first copy of a SOP Instance UID, so the bytes behind a UID do not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from io import BytesIO
from itertools import islice
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from pacslabel.annotations.protocol_mapping import normalise_label
from pacslabel.db.base import utcnow
from pacslabel.errors import PacslabelError
from pacslabel.export import repository
from pacslabel.export.models import SourceObjectHash
from pacslabel.export.released import LabelObject, ReleasedItem, released_items
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import Project

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "pacslabel-dataset-snapshot"
MANIFEST_VERSION = 1
SPLITS = ("train", "validation", "test")
SOP_INSTANCE_UID_TAG = "00080018"
FETCH_WORKERS = 4  # concurrent Orthanc requests of one export (the client's pool holds 8 connections)
FETCH_WINDOW = 16  # objects fetched ahead of the one being written


class ObjectMissing(PacslabelError):
    """An object the manifest names is not (or no longer) in Orthanc: the store is inconsistent."""

    status_code = 502


class ObjectChanged(PacslabelError):
    """Orthanc's bytes of an object differ from the checksum the snapshot froze."""

    status_code = 409


def canonical_json(value: Any) -> bytes:
    """The one serialisation of a manifest: sorted keys, fixed separators, UTF-8, a final newline."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SnapshotHeader:
    """The parts of a manifest that describe the snapshot rather than the data."""

    name: str
    sequence: int
    parent: str | None
    include_test: bool


def fetch_object(orthanc: OrthancClient, sop_instance_uid: str) -> bytes:
    """The stored Part-10 bytes of one instance, unchanged (Orthanc REST, not a transcoding WADO)."""
    orthanc_id = orthanc.find_instance(sop_instance_uid)
    if orthanc_id is None:
        raise ObjectMissing(f"instance {sop_instance_uid} of the released data is not in Orthanc")
    return orthanc.get_instance_file(orthanc_id)


def fetch_verified(orthanc: OrthancClient, sop_instance_uid: str, sha256: str) -> bytes:
    """The object's bytes, checked against the snapshot's checksum (a snapshot never delivers other bytes)."""
    data = fetch_object(orthanc, sop_instance_uid)
    if sha256_hex(data) != sha256:
        raise ObjectChanged(f"instance {sop_instance_uid} in Orthanc no longer matches the snapshot's SHA-256")
    return data


def fetch_objects(orthanc: OrthancClient, sop_instance_uids: Iterable[str], *, workers: int = FETCH_WORKERS,
                  window: int = FETCH_WINDOW) -> Iterator[bytes]:
    """:func:`fetch_object` for many instances, in order, ``workers`` requests at a time.

    Each object costs two round trips to Orthanc (lookup, file); overlapping them hides the latency. At most
    ``window`` objects are fetched ahead, so memory stays bounded however big the snapshot.
    """
    pending = iter(sop_instance_uids)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export-fetch") as pool:
        while True:
            batch = list(islice(pending, window))
            if not batch:
                return
            yield from pool.map(lambda uid: fetch_object(orthanc, uid), batch)


def fetch_verified_many(orthanc: OrthancClient, objects: Iterable[tuple[str, str]]) -> Iterator[bytes]:
    """:func:`fetch_verified` for many ``(sop_instance_uid, sha256)`` pairs, in order (see :func:`fetch_objects`)."""
    pairs = list(objects)
    for (uid, sha256), data in zip(pairs, fetch_objects(orthanc, [uid for uid, _ in pairs]), strict=True):
        if sha256_hex(data) != sha256:
            raise ObjectChanged(f"instance {uid} in Orthanc no longer matches the snapshot's SHA-256")
        yield data


def source_instance_uids(orthanc: OrthancClient, study_instance_uid: str, series_instance_uid: str) -> list[str]:
    """SOP Instance UIDs of one series, sorted (QIDO-RS at instance level, only the UID asked for)."""
    found = orthanc.search_for_instances(study_instance_uid, series_instance_uid, fields=[SOP_INSTANCE_UID_TAG])
    uids = sorted({str(entry[SOP_INSTANCE_UID_TAG]["Value"][0]) for entry in found
                   if entry.get(SOP_INSTANCE_UID_TAG, {}).get("Value")})
    if not uids:
        raise ObjectMissing(f"source series {series_instance_uid} of the released data has no instance in Orthanc")
    return uids


def _code(value: Mapping[str, Any]) -> dict[str, str]:
    return {"CodeValue": str(value["CodeValue"]), "CodingSchemeDesignator": str(value["CodingSchemeDesignator"]),
            "CodeMeaning": str(value["CodeMeaning"])}


def protocol_section(session: Session, project: Project) -> dict[str, Any]:
    """The project's current protocol version: its number, checksum and labels (1 = the first segment label)."""
    row = project_repository.protocol_version(session, project.id, project.protocol_version)
    protocol: Mapping[str, Any] = row.protocol if row is not None else {}
    labels = [{"number": number, "label": str(segment["label"]), "category": _code(segment["category"]),
               "type": _code(segment["type"])}
              for number, segment in enumerate(protocol.get("segments") or [], start=1)]
    return {"version": project.protocol_version, "sha256": row.protocol_sha256 if row is not None else None,
            "labels": labels}


def deidentification_section(project: Project) -> dict[str, Any]:
    """The de-identification profile (PS3.15 CID 7050 codes) and options the project's data went through."""
    from pacslabel.projects.schema import deid_options
    from pacslabel.projects.service import project_spec

    try:
        options = deid_options(project_spec(project))
    except (ValueError, TypeError) as error:  # a project row without a valid definition
        logger.warning("project %s: no de-identification options in its definition (%s)", project.slug, error)
        return {"method_codes": None, "options": None}
    values = asdict(options)
    values["safe_private_tags"] = sorted([list(pair) for pair in options.safe_private_tags])
    return {"method_codes": options.method_codes(), "options": values}


def _segments(label: Dataset, protocol_numbers: Mapping[str, int]) -> list[dict[str, Any]]:
    segments = []
    for item in label.get("SegmentSequence") or []:
        number = int(item.SegmentNumber)
        if number == 0:
            continue  # LABELMAP background
        name = str(item.get("SegmentLabel", ""))
        segments.append({"number": number, "label": name,
                         "protocol_number": protocol_numbers.get(normalise_label(name))})
    return sorted(segments, key=lambda s: s["number"])


def _referenced_series(label: Dataset) -> str | None:
    uids = sorted({str(ref.SeriesInstanceUID) for ref in label.get("ReferencedSeriesSequence") or []
                   if "SeriesInstanceUID" in ref})
    if not uids:  # an SR names its evidence instead
        for study in label.get("CurrentRequestedProcedureEvidenceSequence") or []:
            uids.extend(str(s.SeriesInstanceUID) for s in study.get("ReferencedSeriesSequence") or []
                        if "SeriesInstanceUID" in s)
        uids = sorted(set(uids))
    return uids[0] if len(uids) == 1 else None


def _version_view(version: Any) -> dict[str, Any]:
    return {"id": version.id, "task_id": version.task_id, "version": version.version,
            "author_role": version.author_role, "sop_instance_uid": version.sop_instance_uid,
            "sha256": version.sha256}


class _LabelFacts:
    """Provenance rows for the label objects of many items, loaded in two queries."""

    def __init__(self, session: Session, items: list[ReleasedItem]) -> None:
        labels = [label for item in items for label in item.labels]
        self.consensus = repository.consensus_results(
            session, [label.consensus_id for label in labels if label.consensus_id is not None])
        version_ids = [label.annotation_version_id for label in labels if label.annotation_version_id is not None]
        for result in self.consensus.values():
            version_ids.extend(int(v) for v in result.inputs)
        self.versions = repository.annotation_versions(session, version_ids)

    def provenance(self, label: LabelObject) -> dict[str, Any]:
        view: dict[str, Any] = {"source": label.source}
        if label.annotation_version_id is not None:
            view["annotation_version"] = _version_view(self.versions[label.annotation_version_id])
        if label.consensus_id is not None:
            result = self.consensus[label.consensus_id]
            view["consensus"] = {"id": result.id, "method": result.method, "min_dice": result.min_dice,
                                 "inputs": [_version_view(self.versions[int(v)]) for v in sorted(result.inputs)
                                            if int(v) in self.versions]}
        return view

    def recorded_hash(self, label: LabelObject) -> tuple[str, int] | None:
        if label.annotation_version_id is None:
            return None
        version = self.versions[label.annotation_version_id]
        return version.sha256, version.byte_size


@dataclass
class CollectedRelease:
    """Everything a manifest says except the snapshot header, and the checksums hashed for the first time."""

    body: dict[str, Any]
    new_hashes: list[SourceObjectHash]


def _end(end_transaction: Callable[[], None] | None) -> None:
    if end_transaction is not None:
        end_transaction()


def collect_release(
    session: Session,
    orthanc: OrthancClient,
    project: Project,
    *,
    include_test: bool,
    item_ids: Iterable[int] | None = None,
    end_transaction: Callable[[], None] | None = None,
) -> CollectedRelease:
    """Read ``project``'s released items (only ``item_ids`` when given) and describe every object of them.

    Database reads and Orthanc requests alternate in phases: (1) released items and their provenance,
    (2) QIDO for the instances of every source series, (3) the cached checksums, (4) fetching what has no
    checksum yet and the label objects. ``end_transaction`` (e.g. ``session.commit``) is called after each
    database phase, so that no transaction stays open while Orthanc is busy (SQLite has one writer).
    Nothing is written: the caller stores ``new_hashes``.
    """
    items = released_items(session, project.id, include_test=include_test)
    if item_ids is not None:
        wanted = set(item_ids)
        items = [item for item in items if item.item_id in wanted]
    protocol = protocol_section(session, project)
    deidentification = deidentification_section(project)
    project_view = {"id": project.id, "slug": project.slug, "name": project.name}
    numbers = {normalise_label(label["label"]): int(label["number"]) for label in protocol["labels"]}
    facts = _LabelFacts(session, items)
    _end(end_transaction)

    instances = {(item.item_id, series_uid): source_instance_uids(orthanc, item.study_instance_uid, series_uid)
                 for item in items for series_uid in sorted(item.source_series_uids)}

    all_uids = [uid for uids in instances.values() for uid in uids]
    hashes = {uid: (row.sha256, row.byte_size) for uid, row in repository.cached_hashes(session, all_uids).items()}
    _end(end_transaction)

    missing = sorted(set(all_uids) - hashes.keys())
    new_hashes = []
    for uid, data in zip(missing, fetch_objects(orthanc, missing), strict=True):
        hashes[uid] = (sha256_hex(data), len(data))
        new_hashes.append(SourceObjectHash(sop_instance_uid=uid, sha256=hashes[uid][0], byte_size=len(data),
                                           hashed_at=utcnow()))
    split_counts: Counter[str] = Counter()
    label_counts: Counter[str] = Counter()
    objects = 0
    total_bytes = 0
    entries = []
    for item in items:
        split_counts[item.split] += 1
        series_entries = []
        for series_uid in sorted(item.source_series_uids):
            sops = instances[(item.item_id, series_uid)]
            series_entries.append({"series_instance_uid": series_uid, "instances": [
                {"sop_instance_uid": sop, "sha256": hashes[sop][0], "size": hashes[sop][1]} for sop in sops]})
            objects += len(sops)
            total_bytes += sum(hashes[sop][1] for sop in sops)
        label_entries = []
        item_labels: set[str] = set()
        for label in sorted(item.labels, key=lambda lab: lab.sop_instance_uid):
            data = fetch_object(orthanc, label.sop_instance_uid)
            dataset = dcmread(BytesIO(data), stop_before_pixels=True)
            recorded = facts.recorded_hash(label)
            sha, size = recorded if recorded is not None else (sha256_hex(data), len(data))
            segments = _segments(dataset, numbers)
            item_labels.update(s["label"] for s in segments)
            label_entries.append({
                "study_instance_uid": label.study_instance_uid, "series_instance_uid": label.series_instance_uid,
                "sop_instance_uid": label.sop_instance_uid, "sop_class_uid": str(dataset.SOPClassUID),
                "modality": label.modality, "sha256": sha, "size": size,
                "source_series_instance_uid": _referenced_series(dataset), "segments": segments,
                "provenance": facts.provenance(label)})
            objects += 1
            total_bytes += size
        label_counts.update(item_labels)
        entries.append({
            "item_id": item.item_id, "split": item.split, "patient_pseudonym": item.patient_pseudonym,
            "study_instance_uid": item.study_instance_uid, "released_at": item.released_at.isoformat(),
            "source_series": series_entries, "labels": label_entries})
    body = {
        "project": project_view,
        "protocol": protocol,
        "deidentification": deidentification,
        "counts": {"items": len(entries), "by_split": {split: split_counts.get(split, 0) for split in SPLITS},
                   "by_label": dict(sorted(label_counts.items())), "objects": objects, "bytes": total_bytes},
        "items": entries,
    }
    return CollectedRelease(body=body, new_hashes=new_hashes)


def manifest_bytes(collected: CollectedRelease, header: SnapshotHeader) -> bytes:
    """The canonical manifest of a collected release under ``header``."""
    return canonical_json({
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "snapshot": {"name": header.name, "sequence": header.sequence, "parent": header.parent,
                     "include_test": header.include_test},
        **collected.body,
    })


def store_new_hashes(session: Session, collected: CollectedRelease) -> None:
    for row in collected.new_hashes:
        repository.add_hash(session, row)


def build_manifest(
    session: Session,
    orthanc: OrthancClient,
    project: Project,
    header: SnapshotHeader,
    *,
    item_ids: Iterable[int] | None = None,
) -> bytes:
    """The canonical manifest bytes of ``project``'s released items under ``header`` (checksums cached)."""
    collected = collect_release(session, orthanc, project, include_test=header.include_test, item_ids=item_ids)
    store_new_hashes(session, collected)
    return manifest_bytes(collected, header)


# --- reading a stored manifest -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestObject:
    """One DICOM object a snapshot delivers."""

    kind: str  # "image" | "label"
    item_id: int
    split: str
    patient_pseudonym: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sha256: str
    size: int


def parse_manifest(data: bytes) -> dict[str, Any]:
    document = json.loads(data.decode("utf-8"))
    if document.get("format") != MANIFEST_FORMAT or document.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError("Not a pacslabel snapshot manifest of a known version.")
    return document  # type: ignore[no-any-return]


def manifest_objects(document: Mapping[str, Any]) -> list[ManifestObject]:
    """Every object of a manifest: each item's source instances, then its label objects."""
    objects = []
    for item in document["items"]:
        common = {"item_id": int(item["item_id"]), "split": str(item["split"]),
                  "patient_pseudonym": str(item["patient_pseudonym"]),
                  "study_instance_uid": str(item["study_instance_uid"])}
        for series in item["source_series"]:
            for instance in series["instances"]:
                objects.append(ManifestObject(kind="image", series_instance_uid=series["series_instance_uid"],
                                              sop_instance_uid=instance["sop_instance_uid"],
                                              sha256=instance["sha256"], size=int(instance["size"]), **common))
        for label in item["labels"]:
            objects.append(ManifestObject(kind="label", series_instance_uid=label["series_instance_uid"],
                                          sop_instance_uid=label["sop_instance_uid"], sha256=label["sha256"],
                                          size=int(label["size"]), **{**common, "study_instance_uid":
                                                                      label["study_instance_uid"]}))
    return objects
