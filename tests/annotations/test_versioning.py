"""Each save is a new SOP instance with its author, time, version number and predecessor."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.dataset import Dataset

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.seg_validation import validate_segmentation
from pacslabel.annotations.versioning import read_author, read_predecessor, stamp_version
from tests.annotations.conftest import dciodvfy_errors

SAVED_AT = dt.datetime(2024, 3, 4, 15, 16, 17, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_stamped_seg_is_a_new_instance_in_the_task_series_with_author_and_predecessor(
    seg_type: str, make_seg: Callable[..., Dataset], source: SourceSeries, tmp_path: Path
) -> None:
    seg = make_seg(seg_type)
    before = copy.deepcopy(seg)
    task_series = str(hd.UID())
    predecessor = str(hd.UID())

    v2 = stamp_version(
        seg,
        author="Reader^Two",
        author_role="annotator",
        task_series_uid=task_series,
        series_number=3101,
        instance_number=2,
        predecessor_sop_instance_uid=predecessor,
        time=SAVED_AT,
    )

    assert v2.SOPInstanceUID != seg.SOPInstanceUID
    assert v2.file_meta.MediaStorageSOPInstanceUID == v2.SOPInstanceUID
    assert v2.SOPInstanceUID.startswith(("2.25.", "1.2.826.0.1.3680043.10.511."))  # highdicom's UID root
    assert v2.SeriesInstanceUID == task_series and v2.SeriesNumber == 3101
    assert v2.InstanceNumber == 2
    assert str(v2.ContentCreatorName) == "Reader^Two" == read_author(v2)
    assert (v2.ContentDate, v2.ContentTime) == ("20240304", "151617.123456")
    assert read_predecessor(v2) == predecessor
    assert read_predecessor(seg) is None
    assert seg == before  # the input is unchanged
    validate_segmentation(v2, source)
    assert dciodvfy_errors(v2, tmp_path) == []


def test_restamping_replaces_the_predecessor_instead_of_adding_one(make_seg: Callable[..., Dataset]) -> None:
    series = str(hd.UID())
    v2 = stamp_version(
        make_seg(),
        author="A^B",
        task_series_uid=series,
        series_number=1,
        instance_number=2,
        predecessor_sop_instance_uid="1.2.3.2",
    )
    v3 = stamp_version(
        v2,
        author="A^B",
        task_series_uid=series,
        series_number=1,
        instance_number=3,
        predecessor_sop_instance_uid=v2.SOPInstanceUID,
    )

    assert read_predecessor(v3) == v2.SOPInstanceUID
    assert len(v3.ReferencedInstanceSequence) == 1


def test_version_numbers_and_predecessors_must_agree(make_seg: Callable[..., Dataset]) -> None:
    seg = make_seg()
    common = {"author": "A^B", "task_series_uid": str(hd.UID()), "series_number": 1}

    with pytest.raises(ValueError, match="Version 1 has no predecessor"):
        stamp_version(seg, instance_number=2, predecessor_sop_instance_uid=None, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Version 1 has no predecessor"):
        stamp_version(seg, instance_number=1, predecessor_sop_instance_uid="1.2.3", **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="author must name"):
        stamp_version(
            seg,
            author=" ",
            task_series_uid="1.2",
            series_number=1,
            instance_number=1,
            predecessor_sop_instance_uid=None,
        )
