"""A .npy label array upload is checked against the source grid and the segment map, with precise errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pacslabel.annotations.errors import AnnotationRejected
from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.protocol_mapping import ProtocolLabel
from pacslabel.annotations.seg_building import label_array_from_npy, segment_specs_from_mapping


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_valid_upload_loads(source: SourceSeries, labels: np.ndarray) -> None:
    loaded = label_array_from_npy(npy(labels.astype(np.int64)), source, [1, 2, 3])

    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, labels)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((12, 64, 32), np.uint8), "has shape (12, 64, 32) but the source series needs (12, 64, 64)"),
        (np.zeros((12, 64, 64), np.float32), "must have an integer dtype, not float32"),
        (np.full((12, 64, 64), 7, np.uint8), "holds values [7] that are not known segment numbers [1, 2, 3]"),
        (np.full((12, 64, 64), -1, np.int16), "holds negative values (-1)"),
    ],
)
def test_a_bad_upload_is_rejected_precisely(source: SourceSeries, array: np.ndarray, message: str) -> None:
    with pytest.raises(AnnotationRejected) as caught:
        label_array_from_npy(npy(array), source, [1, 2, 3])

    assert message in caught.value.reason


def test_bytes_that_are_not_npy_are_rejected(source: SourceSeries) -> None:
    with pytest.raises(AnnotationRejected, match="not a NumPy .npy file"):
        label_array_from_npy(b"not numpy at all", source, [1])


def test_pickled_object_arrays_are_refused(source: SourceSeries) -> None:
    with pytest.raises(AnnotationRejected, match="not a plain NumPy .npy array"):
        label_array_from_npy(npy(np.array([{"a": 1}], dtype=object)), source, [1])


def test_segment_map_names_protocol_labels(protocol_labels: list[ProtocolLabel]) -> None:
    specs = segment_specs_from_mapping({"2": "cyst", "1": "Liver Lesion"}, protocol_labels)

    assert [(s.number, s.label, s.type_code.value) for s in specs] == [
        (1, "Liver lesion", "108369006"),
        (2, "Cyst", "367643001"),
    ]
    with pytest.raises(AnnotationRejected, match="Unknown label: segment 3 'Kidney'"):
        segment_specs_from_mapping({"3": "Kidney"}, protocol_labels)
