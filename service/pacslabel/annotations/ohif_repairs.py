"""Repair the known gaps of SEGs written by OHIF 3.12 before they are validated and stored.

Each repair is small, is applied only when the gap is present, and is recorded as one sentence so that the
audit log says what the gateway changed in the reader's object (ohif-integration notes §5.1, §6, §8).
Nothing that changes *where* an annotation lies is ever repaired: geometry problems are rejected instead.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from pacslabel.annotations import functional_groups as groups
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.protocol_mapping import (
    ProtocolLabel,
    find_protocol_label,
    first_item,
    is_ohif_placeholder,
)
from pacslabel.annotations.seg_pixels import SEG_SOP_CLASS_UIDS

logger = logging.getLogger(__name__)

OHIF_NO_STUDY_ID = "No Study ID"
PER_FRAME_FUNCTIONAL_GROUPS = 0x52009230
PIXEL_MEASURES, PIXEL_SPACING = 0x00289110, 0x00280030
DERIVATION_IMAGE_SEQUENCE, SOURCE_IMAGE_SEQUENCE, REFERENCED_SOP_INSTANCE_UID = 0x00089124, 0x00082112, 0x00081155


@dataclass
class RepairResult:
    """The repaired copy of the SEG and one sentence per repair, for the audit log."""

    dataset: Dataset
    repairs: list[str] = field(default_factory=list)


def _ds(value: float) -> str:
    # DS is at most 16 characters; repr of a float can be longer (e.g. 0.7812500000000001).
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6f}"


def _complete_measures(shared: Dataset) -> bool:
    measures = shared.get("PixelMeasuresSequence")
    if not measures:
        return False
    item = measures[0]  # the same tests as the filling below: when it would fill nothing, this is True
    return ("PixelSpacing" in item and bool(item.PixelSpacing)
            and all(keyword in item and item[keyword].value not in (None, "")
                    for keyword in ("SliceThickness", "SpacingBetweenSlices")))


def fill_shared_pixel_measures(seg: Dataset, source: SourceSeries) -> list[str]:
    """Give the SEG a shared PixelMeasuresSequence with PixelSpacing, SliceThickness and SpacingBetweenSlices.

    OHIF writes one EMPTY item, which Orthanc's DICOM JSON drops, and OHIF then fails to reload its own SEG
    ("Cannot destructure property 'SpacingBetweenSlices'", notes §6). Values a frame already carries in a
    per-frame PixelMeasuresSequence are left alone: a per-frame value wins over a shared one.
    """
    repairs: list[str] = []
    if not seg.get("SharedFunctionalGroupsSequence"):
        seg.SharedFunctionalGroupsSequence = [Dataset()]
        repairs.append("Added the missing SharedFunctionalGroupsSequence item.")
    shared = seg.SharedFunctionalGroupsSequence[0]
    if _complete_measures(shared):
        return repairs  # nothing to fill: no need to look at every frame
    # Read through functional_groups: the per-frame items stay unconverted (and their received bytes reusable).
    per_frame = [groups.first(frame, PIXEL_MEASURES) for frame in groups.items(seg, PER_FRAME_FUNCTIONAL_GROUPS)]
    if per_frame and all(groups.element(item, PIXEL_SPACING) is not None for item in per_frame):
        return repairs
    if not shared.get("PixelMeasuresSequence"):
        shared.PixelMeasuresSequence = [Dataset()]
    measures = shared.PixelMeasuresSequence[0]
    filled = []
    if "PixelSpacing" not in measures or not measures.PixelSpacing:
        measures.PixelSpacing = [_ds(v) for v in source.pixel_spacing]
        filled.append("PixelSpacing")
    if "SliceThickness" not in measures or measures.SliceThickness in (None, ""):
        measures.SliceThickness = _ds(source.slice_thickness if source.slice_thickness is not None else source.spacing)
        filled.append("SliceThickness")
    if "SpacingBetweenSlices" not in measures or measures.SpacingBetweenSlices in (None, ""):
        measures.SpacingBetweenSlices = _ds(source.spacing)
        filled.append("SpacingBetweenSlices")
    if filled:
        repairs.append(
            f"Filled the shared PixelMeasuresSequence ({', '.join(filled)}) from source series "
            f"{source.series_instance_uid}."
        )
    return repairs


def _fix_study_id(seg: Dataset, source: SourceSeries) -> list[str]:
    if seg.get("StudyID") != OHIF_NO_STUDY_ID:
        return []
    seg.StudyID = source.study_id or ""  # Type 2: empty is valid, OHIF's placeholder is not the study's ID
    return [f"Replaced StudyID {OHIF_NO_STUDY_ID!r} with the source's {seg.StudyID!r}."]


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _map_placeholder_codes(seg: Dataset, protocol_labels: Sequence[ProtocolLabel | str] | None) -> list[str]:
    """Replace OHIF's hard-coded ``T-D0050 SRT "Tissue"`` category/type with the protocol label's codes."""
    repairs: list[str] = []
    for segment in seg.get("SegmentSequence") or []:
        category = first_item(segment, "SegmentedPropertyCategoryCodeSequence")
        type_item = first_item(segment, "SegmentedPropertyTypeCodeSequence")
        if not (is_ohif_placeholder(category) or is_ohif_placeholder(type_item)):
            continue
        label = find_protocol_label(segment, protocol_labels) if protocol_labels else None
        if not isinstance(label, ProtocolLabel):
            logger.debug("Segment %s keeps OHIF's placeholder codes: no protocol label.", segment.get("SegmentNumber"))
            continue
        segment.SegmentedPropertyCategoryCodeSequence = [_code_item(label.category)]
        segment.SegmentedPropertyTypeCodeSequence = [_code_item(label.type)]
        repairs.append(
            f"Mapped segment {segment.SegmentNumber} {str(segment.get('SegmentLabel', ''))!r} from OHIF's placeholder "
            f"T-D0050 'Tissue' to protocol label {label.name!r} ({label.category.value}/{label.type.value} "
            f"{label.type.scheme_designator})."
        )
    return repairs


def _add_referenced_series(seg: Dataset, source: SourceSeries) -> list[str]:
    """OHIF needs ReferencedSeriesSequence in the metadata to load a SEG (OHIF #4271); add it when missing.

    Only the per-frame DerivationImageSequence can say which series the SEG was drawn on; when its images are
    all in the source series, the reference is rebuilt from them. Otherwise validation rejects the SEG.
    """
    if seg.get("ReferencedSeriesSequence"):
        return []
    derived = {
        groups.uid(source_image, REFERENCED_SOP_INSTANCE_UID) or ""
        for frame in groups.items(seg, PER_FRAME_FUNCTIONAL_GROUPS)
        for derivation in groups.items(frame, DERIVATION_IMAGE_SEQUENCE)
        for source_image in groups.items(derivation, SOURCE_IMAGE_SEQUENCE)
    }
    if not derived or not derived <= set(source.sop_instance_uids):
        return []
    instances = []
    for uid, ds in zip(source.sop_instance_uids, source.datasets, strict=True):
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = uid
        instances.append(item)
    series = Dataset()
    series.SeriesInstanceUID = source.series_instance_uid
    series.ReferencedInstanceSequence = instances
    seg.ReferencedSeriesSequence = [series]
    return [f"Added ReferencedSeriesSequence to source series {source.series_instance_uid} from the frames' sources."]


# The only top-level elements a repair changes. Everything else (above all the per-frame functional groups
# and the pixel data, tens of MB for a large SEG) is shared with the caller's Dataset, not copied: a repair
# never changes where a frame lies, and the save reuses their received bytes (annotations.part10_splice).
_REPAIRED_ELEMENTS = ("SharedFunctionalGroupsSequence", "StudyID", "SegmentSequence")


def _copy_for_repair(seg: Dataset) -> Dataset:
    """A new Dataset with the same elements as ``seg``; the elements a repair may change are deep copies."""
    repaired = Dataset({tag: seg.get_item(tag) for tag in seg.keys()})
    for keyword in _REPAIRED_ELEMENTS:
        if keyword in seg:
            element = copy.deepcopy(seg.get_item(keyword))
            repaired[element.tag] = element
    file_meta = getattr(seg, "file_meta", None)
    if file_meta is not None:
        repaired.file_meta = copy.deepcopy(file_meta)
    repaired.set_original_encoding(*_original_encoding(seg))
    return repaired


def _original_encoding(seg: Dataset) -> tuple[bool | None, bool | None, str | list[str] | None]:
    implicit, little = seg.original_encoding
    return implicit, little, seg.original_character_set


def repair_ohif_segmentation(
    seg: Dataset,
    source: SourceSeries,
    *,
    protocol_labels: Sequence[ProtocolLabel | str] | None = None,
) -> RepairResult:
    """Return a repaired copy of an OHIF SEG and the list of repairs (empty when nothing was needed).

    The caller's Dataset is not modified: the copy shares only the elements no repair touches. A Dataset
    that is not a SEG is returned unchanged (validation rejects it with the precise reason).
    """
    repaired = _copy_for_repair(seg)
    if str(repaired.get("SOPClassUID", "")) not in SEG_SOP_CLASS_UIDS or "SegmentSequence" not in repaired:
        return RepairResult(repaired, [])
    repairs = [
        *fill_shared_pixel_measures(repaired, source),
        *_fix_study_id(repaired, source),
        *_map_placeholder_codes(repaired, protocol_labels),
        *_add_referenced_series(repaired, source),
    ]
    for repair in repairs:
        logger.info("SEG %s: %s", repaired.get("SOPInstanceUID"), repair)
    return RepairResult(repaired, repairs)
