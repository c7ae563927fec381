"""An OHIF 3.12-like SEG (empty shared PixelMeasuresSequence, T-D0050 codes, "No Study ID") is repaired."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.ohif_repairs import repair_ohif_segmentation
from pacslabel.annotations.protocol_mapping import ProtocolLabel
from pacslabel.annotations.seg_reading import read_label_array
from pacslabel.annotations.seg_validation import validate_segmentation


def tissue() -> Dataset:
    item = Dataset()
    item.CodeValue = "T-D0050"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Tissue"
    return item


def ohif_like(seg: Dataset, *, drop_pixel_measures: bool) -> Dataset:
    """What OHIF 3.12.10 stores (ohif-integration notes §5.1) or what Orthanc's JSON makes of it (§6)."""
    forged = copy.deepcopy(seg)
    shared = forged.SharedFunctionalGroupsSequence[0]
    if drop_pixel_measures:
        del shared.PixelMeasuresSequence  # Orthanc's DICOM JSON drops the empty item
    else:
        shared.PixelMeasuresSequence = [Dataset()]
    forged.StudyID = "No Study ID"
    forged.SeriesNumber = 99
    for segment in forged.SegmentSequence:
        segment.SegmentedPropertyCategoryCodeSequence = [tissue()]
        segment.SegmentedPropertyTypeCodeSequence = [tissue()]
        segment.SegmentAlgorithmName = "OHIF Brush"
    return forged


@pytest.mark.parametrize("drop_pixel_measures", [False, True], ids=["empty-item", "dropped-by-json"])
def test_ohif_seg_is_repaired_then_validates_and_reads_back_exactly(
    drop_pixel_measures: bool,
    make_seg: Callable[..., Dataset],
    source: SourceSeries,
    labels: np.ndarray,
    protocol_labels: list[ProtocolLabel],
) -> None:
    ohif = ohif_like(make_seg("BINARY"), drop_pixel_measures=drop_pixel_measures)
    before = copy.deepcopy(ohif)

    result = repair_ohif_segmentation(ohif, source, protocol_labels=protocol_labels)

    repaired = result.dataset
    measures = repaired.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.8, 0.8]
    assert float(measures.SliceThickness) == 5.0
    assert float(measures.SpacingBetweenSlices) == 5.0
    assert repaired.StudyID == "S1"
    lesion = repaired.SegmentSequence[0]
    assert lesion.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert lesion.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert repaired.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert result.repairs[0].startswith("Filled the shared PixelMeasuresSequence (PixelSpacing, SliceThickness")
    assert "Replaced StudyID 'No Study ID' with the source's 'S1'." in result.repairs
    assert sum("from OHIF's placeholder T-D0050" in repair for repair in result.repairs) == 3
    report = validate_segmentation(repaired, source, protocol_labels=protocol_labels)
    assert report.protocol_labels == {1: "Liver lesion", 2: "Cyst", 3: "Liver"}
    np.testing.assert_array_equal(read_label_array(repaired, source), labels)
    assert ohif == before  # the caller's object is untouched


def test_unrepaired_ohif_seg_is_rejected_with_a_hint(make_seg: Callable[..., Dataset], source: SourceSeries) -> None:
    ohif = ohif_like(make_seg("BINARY"), drop_pixel_measures=False)

    with pytest.raises(AnnotationRejected, match="must be repaired with repair_ohif_segmentation first"):
        validate_segmentation(ohif, source)


def test_placeholder_codes_without_a_protocol_label_stay_and_are_rejected_as_unknown(
    make_seg: Callable[..., Dataset], source: SourceSeries, protocol_labels: list[ProtocolLabel]
) -> None:
    ohif = ohif_like(make_seg("BINARY"), drop_pixel_measures=False)
    ohif.SegmentSequence[0].SegmentLabel = "Segment 1"  # OHIF's default name, not a protocol label

    result = repair_ohif_segmentation(ohif, source, protocol_labels=protocol_labels)

    assert result.dataset.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "T-D0050"
    with pytest.raises(AnnotationRejected, match="Unknown label: segment 1 'Segment 1'"):
        validate_segmentation(result.dataset, source, protocol_labels=protocol_labels)


def test_missing_referenced_series_is_rebuilt_from_the_frame_sources(
    make_seg: Callable[..., Dataset], source: SourceSeries
) -> None:
    seg = make_seg("BINARY")
    del seg.ReferencedSeriesSequence

    result = repair_ohif_segmentation(seg, source)

    assert result.dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_instance_uid
    assert result.repairs == [
        f"Added ReferencedSeriesSequence to source series {source.series_instance_uid} from the frames' sources."
    ]
    validate_segmentation(result.dataset, source)


def test_a_clean_seg_needs_no_repair(make_seg: Callable[..., Dataset], source: SourceSeries) -> None:
    assert repair_ohif_segmentation(make_seg("LABELMAP"), source).repairs == []
