"""Stamp a SEG or SR as one version of a task's annotation (architecture invariant 3).

Each save becomes a NEW SOP instance in the task's own series: a fresh SOPInstanceUID, the author, the time,
InstanceNumber = version number and a reference to the version it replaces. Nothing is overwritten: the
predecessor stays in the PACS and the chain can be walked back with :func:`read_predecessor`.

Where the predecessor reference lives:

- SR: ``PredecessorDocumentsSequence`` (SR Document General Module), the standard's own slot for "this
  document is a new version of that one" (highdicom's ``previous_versions`` writes the same attribute).
- SEG: the Segmentation IOD has no predecessor attribute. We use the top-level ``ReferencedInstanceSequence``
  (General Reference Module, part of the SEG IOD; ``dciodvfy`` accepts it) with a purpose-of-reference code.
  Not ``SourceImageSequence`` (highdicom lists the source CT images there) nor ``ReferencedSeriesSequence``
  (OHIF reads it as "the series this SEG segments"). No DCM code means "previous version of this
  segmentation" (121320/121358 mean *uncompressed*/*for-processing* predecessor images, which would be
  misread), so the purpose is a local code in a ``99``-prefixed private coding scheme (PS3.16 §8.2).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pacslabel.annotations.protocol_mapping import code_key
from pacslabel.annotations.seg_pixels import SEG_SOP_CLASS_UIDS

PREDECESSOR_PURPOSE = Code("PREDECESSOR", "99PACSLABEL", "Previous version of this annotation")

# Reader roles (TID 1002 "Person Observer's Role in this Procedure", CID 7453 Performing Roles).
AUTHOR_ROLES: dict[str, Code] = {
    "annotator": codes.DCM.Performing,
    "reviewer": Code("C54634", "NCIt", "Reviewer"),
    "arbiter": Code("C54634", "NCIt", "Reviewer"),
}

# Concept names of the person observer context items (TID 1002) that a new version replaces.
_OBSERVER_CONCEPTS = {
    ("121005", "DCM"),  # Observer Type
    ("121008", "DCM"),  # Person Observer Name
    ("121009", "DCM"),  # Person Observer's Organization Name
    ("121010", "DCM"),  # Person Observer's Role in the Organization
    ("121011", "DCM"),  # Person Observer's Role in this Procedure
    ("128774", "DCM"),  # Person Observer's Login Name
}


def _is_sr(ds: Dataset) -> bool:
    return ds.get("Modality") == "SR" or "ContentSequence" in ds and "ValueType" in ds


def _role_code(author_role: str | Code | None) -> Code | None:
    if author_role is None or isinstance(author_role, Code):
        return author_role
    try:
        return AUTHOR_ROLES[author_role.lower()]
    except KeyError:
        raise ValueError(f"author_role must be one of {sorted(AUTHOR_ROLES)} or a Code, not {author_role!r}.") from None


def _reference_item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _stamp_sr_observer(sr: Dataset, author: str, role: Code | None) -> None:
    """Replace the root person observer context (TID 1002) with the version's author."""
    context = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=author,
            role_in_procedure=role,
        ),
    )
    items = list(sr.get("ContentSequence") or [])
    kept: list[Dataset] = []
    insert_at: int | None = None
    for item in items:
        concept = item.get("ConceptNameCodeSequence")
        key = code_key(concept[0]) if concept else None
        if item.get("RelationshipType") == "HAS OBS CONTEXT" and key in _OBSERVER_CONCEPTS:
            insert_at = len(kept) if insert_at is None else insert_at
            continue
        kept.append(item)
    if insert_at is None:
        # TID 1500: Language of Content (HAS CONCEPT MOD) first, then the observer context.
        insert_at = sum(1 for item in kept[:1] if item.get("RelationshipType") == "HAS CONCEPT MOD")
    sr.ContentSequence = kept[:insert_at] + list(context) + kept[insert_at:]


def stamp_version(
    seg_or_sr: Dataset,
    *,
    author: str,
    author_role: str | Code | None = None,
    task_series_uid: str,
    series_number: int,
    instance_number: int,
    predecessor_sop_instance_uid: str | None,
    time: dt.datetime | None = None,
    predecessor_sop_class_uid: str | None = None,
    predecessor_series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """Return a new Dataset: ``seg_or_sr`` stamped as version ``instance_number`` of a task's annotation.

    The input is not modified. The predecessor is assumed to be in the same study and, unless told
    otherwise, in the same task series with the same SOP class (every version of a task is).

    Raises
    ------
    ValueError
        For an empty author, a version number below 1, a version 1 with a predecessor or a later version
        without one, or a predecessor that is the new instance itself.
    """
    if not author or not str(author).strip():
        raise ValueError("author must name the person who saved the annotation.")
    if instance_number < 1:
        raise ValueError(f"instance_number (the version) must be 1 or more, not {instance_number}.")
    if (instance_number == 1) != (predecessor_sop_instance_uid is None):
        raise ValueError(
            "Version 1 has no predecessor and every later version has one; got version "
            f"{instance_number} with predecessor {predecessor_sop_instance_uid!r}."
        )
    role = _role_code(author_role)
    stamped = copy.deepcopy(seg_or_sr)
    new_uid = sop_instance_uid or str(hd.UID())
    if new_uid in (str(seg_or_sr.get("SOPInstanceUID", "")), predecessor_sop_instance_uid):
        raise ValueError("A new version needs a SOPInstanceUID of its own.")
    when = time or dt.datetime.now(dt.UTC)
    stamped.SOPInstanceUID = new_uid
    if getattr(stamped, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in stamped.file_meta:
        stamped.file_meta.MediaStorageSOPInstanceUID = new_uid
    stamped.SeriesInstanceUID = task_series_uid
    stamped.SeriesNumber = series_number
    stamped.InstanceNumber = instance_number
    stamped.ContentDate = stamped.InstanceCreationDate = when.strftime("%Y%m%d")
    stamped.ContentTime = stamped.InstanceCreationTime = when.strftime("%H%M%S.%f")
    sop_class = str(stamped.SOPClassUID)
    predecessor_class = predecessor_sop_class_uid or sop_class
    if _is_sr(stamped):
        _stamp_sr_observer(stamped, author, role)
        if predecessor_sop_instance_uid is not None:
            series = Dataset()
            series.SeriesInstanceUID = predecessor_series_instance_uid or task_series_uid
            series.ReferencedSOPSequence = [_reference_item(predecessor_class, predecessor_sop_instance_uid)]
            study = Dataset()
            study.StudyInstanceUID = stamped.StudyInstanceUID
            study.ReferencedSeriesSequence = [series]
            stamped.PredecessorDocumentsSequence = [study]
        elif "PredecessorDocumentsSequence" in stamped:
            del stamped.PredecessorDocumentsSequence
    elif sop_class in SEG_SOP_CLASS_UIDS:
        stamped.ContentCreatorName = author
        others = [item for item in stamped.get("ReferencedInstanceSequence") or [] if not _is_predecessor_item(item)]
        if predecessor_sop_instance_uid is not None:
            item = _reference_item(predecessor_class, predecessor_sop_instance_uid)
            item.PurposeOfReferenceCodeSequence = [_code_item(PREDECESSOR_PURPOSE)]
            others.append(item)
        if others:
            stamped.ReferencedInstanceSequence = others
        elif "ReferencedInstanceSequence" in stamped:
            del stamped.ReferencedInstanceSequence
    else:
        raise ValueError(f"Only SEG and SR objects are versioned, not SOP class {sop_class}.")
    return stamped


def _is_predecessor_item(item: Dataset) -> bool:
    purposes: Sequence[Dataset] = item.get("PurposeOfReferenceCodeSequence") or []
    return any(code_key(purpose) == code_key(PREDECESSOR_PURPOSE) for purpose in purposes)


def read_predecessor(ds: Dataset) -> str | None:
    """SOPInstanceUID of the version this SEG or SR replaces, or None for a first version."""
    for study in ds.get("PredecessorDocumentsSequence") or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for instance in series.get("ReferencedSOPSequence") or []:
                return str(instance.ReferencedSOPInstanceUID)
    for item in ds.get("ReferencedInstanceSequence") or []:
        if _is_predecessor_item(item):
            return str(item.ReferencedSOPInstanceUID)
    return None


def read_author(ds: Dataset) -> str | None:
    """The author stamped on a SEG (ContentCreatorName) or SR (root Person Observer Name)."""
    if "ContentCreatorName" in ds and ds.ContentCreatorName:
        return str(ds.ContentCreatorName)
    for item in ds.get("ContentSequence") or []:
        concept = item.get("ConceptNameCodeSequence")
        if concept and code_key(concept[0]) == ("121008", "DCM") and "PersonName" in item:
            return str(item.PersonName)
    return None
