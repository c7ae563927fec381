"""TID 1500 measurement report: build, conformance, read back, version."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.coding import Code

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.sr_building import LengthMeasurement, build_measurement_report, read_measurement_report
from pacslabel.annotations.versioning import read_author, read_predecessor, stamp_version
from tests.annotations.conftest import NEOPLASM, dciodvfy_errors

MALIGNANCY = Code("MALIGNANT", "99PACSLABEL", "Malignancy suspected")
CONTRAST = Code("CONTRAST", "99PACSLABEL", "Contrast phase adequate")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")


def lengths(source: SourceSeries) -> list[LengthMeasurement]:
    return [
        LengthMeasurement(
            12.5, source.sop_instance_uids[4], ((10.0, 12.0), (25.5, 12.0)), "lesion 1", str(hd.UID()), NEOPLASM
        ),
        LengthMeasurement(
            7.25, source.sop_instance_uids[7], ((30.0, 30.0), (34.0, 36.0)), "lesion 2", str(hd.UID()), NEOPLASM
        ),
    ]


@pytest.mark.parametrize("enhanced", [False, True], ids=["comprehensive3d", "enhanced"])
def test_sr_is_conformant_and_its_answers_and_measurements_read_back_equal(
    enhanced: bool, source: SourceSeries, tmp_path: Path
) -> None:
    measurements = lengths(source)
    answers = {MALIGNANCY: YES, CONTRAST: NO}

    sr = build_measurement_report(
        source,
        measurements,
        answers,
        author="Reader^One",
        series_instance_uid=str(hd.UID()),
        series_number=3000,
        instance_number=1,
        enhanced=enhanced,
    )

    assert dciodvfy_errors(sr, tmp_path) == []
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    content = read_measurement_report(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
    assert content.lengths == measurements
    assert content.answer(MALIGNANCY) == YES and content.answer(CONTRAST) == NO
    assert len(content.answers) == 2
    assert read_author(sr) == "Reader^One"


def test_sr_version_has_the_new_author_and_its_predecessor(source: SourceSeries, tmp_path: Path) -> None:
    series = str(hd.UID())
    v1 = build_measurement_report(
        source,
        lengths(source),
        {MALIGNANCY: YES},
        author="Reader^One",
        series_instance_uid=series,
        series_number=3000,
        instance_number=1,
    )

    v2 = stamp_version(
        v1,
        author="Reviewer^Two",
        author_role="reviewer",
        task_series_uid=series,
        series_number=3000,
        instance_number=2,
        predecessor_sop_instance_uid=v1.SOPInstanceUID,
    )

    assert read_predecessor(v2) == v1.SOPInstanceUID
    assert read_author(v2) == "Reviewer^Two" and read_author(v1) == "Reader^One"
    assert v2.PredecessorDocumentsSequence[0].StudyInstanceUID == source.study_instance_uid
    assert read_measurement_report(v2).answer(MALIGNANCY) == YES
    assert dciodvfy_errors(v2, tmp_path) == []


def test_a_length_on_an_image_outside_the_source_is_refused(source: SourceSeries) -> None:
    bad = LengthMeasurement(3.0, "1.2.3.4", ((0.0, 0.0), (1.0, 1.0)), "lesion 9")

    with pytest.raises(ValueError, match="is drawn on SOP instance 1.2.3.4, which is not in the source series"):
        build_measurement_report(
            source,
            [bad],
            {},
            author="Reader^One",
            series_instance_uid=str(hd.UID()),
            series_number=3000,
            instance_number=1,
        )
