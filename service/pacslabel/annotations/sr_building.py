"""TID 1500 Measurement Reports: lengths drawn on images and the protocol's qualitative answers.

Encoding (highdicom):

- each length is one TID 1501 measurement group (tracking identifier + UID, finding type) holding a TID 300
  ``Length`` NUM in mm, INFERRED FROM a 2-D POLYLINE SCOORD SELECTED FROM the source image: the same shape
  OHIF writes for its Length tool, so OHIF can hydrate it;
- the protocol answers (question code -> answer code) are one TID 1501 group of qualitative evaluations
  (``CODE`` items), tracking ID ``protocol answers``.

The reader walks the content tree with plain pydicom, so it also reads reports that highdicom did not write.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import pacslabel
from pacslabel.annotations.geometry import SourceItem, SourceSeries
from pacslabel.annotations.protocol_mapping import code_from_item, code_key, same_code

logger = logging.getLogger(__name__)

ANSWERS_TRACKING_ID = "protocol answers"
_IMAGING_MEASUREMENTS = ("126010", "DCM")
_MEASUREMENT_GROUP = ("125007", "DCM")
_TRACKING_IDENTIFIER = ("112039", "DCM")
_TRACKING_UID = ("112040", "DCM")
_FINDING = ("121071", "DCM")


@dataclass(frozen=True)
class LengthMeasurement:
    """A length (mm) drawn as a line on one source image; points are (column, row) image coordinates."""

    value_mm: float
    sop_instance_uid: str
    points: tuple[tuple[float, float], ...]
    tracking_id: str
    tracking_uid: str | None = None
    finding_type: Code | None = None
    name: Code = codes.SCT.Length


@dataclass(frozen=True)
class MeasurementReportContent:
    """What :func:`read_measurement_report` extracts."""

    lengths: list[LengthMeasurement] = field(default_factory=list)
    answers: dict[tuple[str, str], Code] = field(default_factory=dict)  # (question value, scheme) -> answer

    def answer(self, question: Code) -> Code | None:
        for key, value in self.answers.items():
            if same_code(Code(key[0], key[1], ""), question):
                return value
        return None


def _source_series(source: SourceSeries | Sequence[SourceItem]) -> SourceSeries:
    return source if isinstance(source, SourceSeries) else SourceSeries.from_instances(source)


def _length_group(measurement: LengthMeasurement, source: SourceSeries) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    index = source.index_of_sop_instance(measurement.sop_instance_uid)
    if index is None:
        raise ValueError(
            f"Length {measurement.tracking_id!r} is drawn on SOP instance {measurement.sop_instance_uid}, which is "
            f"not in the source series {source.series_instance_uid}."
        )
    if measurement.value_mm < 0 or not np.isfinite(measurement.value_mm):
        raise ValueError(f"Length {measurement.tracking_id!r} must be a finite, non-negative value in mm.")
    points = np.asarray(measurement.points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise ValueError(f"Length {measurement.tracking_id!r} needs at least two (column, row) points.")
    image = source.datasets[index]
    coordinates = hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=points,
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    length = hd.sr.Measurement(
        name=measurement.name,
        value=float(measurement.value_mm),
        unit=codes.UCUM.Millimeter,
        referenced_coordinates=[coordinates],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=measurement.tracking_uid or str(hd.UID()),
            identifier=measurement.tracking_id,
        ),
        finding_type=measurement.finding_type,
        measurements=[length],
    )


def _answers_group(
    answers: Mapping[Code, Code] | Sequence[tuple[Code, Code]],
    source: SourceSeries,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    pairs = list(answers.items()) if isinstance(answers, Mapping) else list(answers)
    evaluations = [hd.sr.QualitativeEvaluation(name=question, value=answer) for question, answer in pairs]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=str(hd.UID()), identifier=ANSWERS_TRACKING_ID),
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source.datasets[0])],
    )


def build_measurement_report(
    source: SourceSeries | Sequence[SourceItem],
    measurements: Sequence[LengthMeasurement],
    answers: Mapping[Code, Code] | Sequence[tuple[Code, Code]],
    *,
    author: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    sop_instance_uid: str | None = None,
    procedure_reported: Code = Code("363679005", "SCT", "Imaging procedure"),
    series_description: str | None = None,
    time: dt.datetime | None = None,
    enhanced: bool = False,
) -> Dataset:
    """Build a TID 1500 Measurement Report in a Comprehensive 3D SR (or an Enhanced SR with ``enhanced``).

    Raises
    ------
    ValueError
        When there is nothing to report, a length is drawn outside the source series, or the author is empty.
    """
    series = _source_series(source)
    if not measurements and not answers:
        raise ValueError("A measurement report needs at least one measurement or one answer.")
    if not author or not author.strip():
        raise ValueError("author must name the reader who made the report.")
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations] = [_length_group(m, series) for m in measurements]
    if answers:
        groups.append(_answers_group(answers, series))
    observation_context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=author),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=procedure_reported,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    # Evidence = every image the content tree references, once (highdicom builds the evidence sequence).
    evidence_uids = dict.fromkeys([series.sop_instance_uids[0], *(m.sop_instance_uid for m in measurements)])
    evidence = [series.datasets[series.sop_instance_uids.index(uid)] for uid in evidence_uids]
    when = time or dt.datetime.now(dt.UTC)
    sr_class = hd.sr.EnhancedSR if enhanced else hd.sr.Comprehensive3DSR
    sr = sr_class(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or str(hd.UID()),
        instance_number=instance_number,
        manufacturer="pacslabel",
        is_complete=True,
        series_description=series_description,
        content_date=when.date(),
        content_time=when.time(),
        software_versions=pacslabel.__version__,
    )
    logger.debug("Built SR %s with %d lengths and %d answers.", sr.SOPInstanceUID, len(measurements), len(answers))
    return sr


def _concept(item: Dataset) -> tuple[str, str] | None:
    concept = item.get("ConceptNameCodeSequence")
    return code_key(concept[0]) if concept else None


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _read_length(num: Dataset, tracking_id: str, tracking_uid: str | None, finding: Code | None) -> LengthMeasurement:
    value = float(num.MeasuredValueSequence[0].NumericValue)
    points: tuple[tuple[float, float], ...] = ()
    sop_uid = ""
    for child in _children(num):
        if child.get("ValueType") == "SCOORD":
            data = [float(v) for v in child.GraphicData]
            points = tuple(zip(data[0::2], data[1::2], strict=True))
            for image in _children(child):
                if image.get("ValueType") == "IMAGE":
                    sop_uid = str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    name = code_from_item(num.ConceptNameCodeSequence[0]) or codes.SCT.Length
    return LengthMeasurement(value, sop_uid, points, tracking_id, tracking_uid, finding, name)


def read_measurement_report(sr: Dataset) -> MeasurementReportContent:
    """Extract lengths (with their lines and images) and qualitative answers from a TID 1500 report."""
    content = MeasurementReportContent()
    containers = [item for item in _children(sr) if _concept(item) == _IMAGING_MEASUREMENTS]
    for container in containers:
        for group in _children(container):
            if _concept(group) != _MEASUREMENT_GROUP:
                continue
            items = _children(group)
            tracking_id = next((str(i.TextValue) for i in items if _concept(i) == _TRACKING_IDENTIFIER), "")
            tracking_uid = next((str(i.UID) for i in items if _concept(i) == _TRACKING_UID), None)
            finding = next((code_from_item(i.ConceptCodeSequence[0]) for i in items if _concept(i) == _FINDING), None)
            for item in items:
                if item.get("ValueType") == "NUM" and item.get("MeasuredValueSequence"):
                    content.lengths.append(_read_length(item, tracking_id, tracking_uid, finding))
                elif item.get("ValueType") == "CODE" and item.get("RelationshipType") == "CONTAINS":
                    key = _concept(item)
                    answer = code_from_item(item.ConceptCodeSequence[0])
                    if key is not None and answer is not None and key != _FINDING:
                        content.answers[key] = answer
    return content
