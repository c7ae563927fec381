"""SEG/SR annotations: source geometry, validation, OHIF repairs, building, reading and versioning.

No database and no HTTP here: every function takes pydicom Datasets (or arrays) and returns new ones.
The STOW path is: ``SourceSeries.from_instances`` -> ``repair_ohif_segmentation`` -> ``validate_segmentation``
-> ``stamp_version`` -> store.
"""

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries, spacing_from_positions
from pacslabel.annotations.ohif_repairs import RepairResult, fill_shared_pixel_measures, repair_ohif_segmentation
from pacslabel.annotations.protocol_mapping import ProtocolLabel
from pacslabel.annotations.seg_building import (
    SegmentSpec,
    build_segmentation,
    label_array_from_npy,
    segment_specs_from_mapping,
    segment_specs_from_seg,
)
from pacslabel.annotations.seg_reading import read_label_array, read_segment_masks
from pacslabel.annotations.seg_validation import ValidationReport, validate_segmentation
from pacslabel.annotations.sr_building import (
    LengthMeasurement,
    MeasurementReportContent,
    build_measurement_report,
    read_measurement_report,
)
from pacslabel.annotations.versioning import read_author, read_predecessor, stamp_version

__all__ = [
    "AnnotationRejected",
    "LengthMeasurement",
    "MeasurementReportContent",
    "ProtocolLabel",
    "RepairResult",
    "SegmentSpec",
    "SourceSeries",
    "ValidationReport",
    "build_measurement_report",
    "build_segmentation",
    "fill_shared_pixel_measures",
    "label_array_from_npy",
    "read_author",
    "read_label_array",
    "read_measurement_report",
    "read_predecessor",
    "read_segment_masks",
    "repair_ohif_segmentation",
    "segment_specs_from_mapping",
    "segment_specs_from_seg",
    "spacing_from_positions",
    "stamp_version",
    "validate_segmentation",
]
