"""Fixtures for the annotations tests: a synthetic CT series, its grid, protocol labels, a dciodvfy runner."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.protocol_mapping import ProtocolLabel
from pacslabel.annotations.seg_building import SegmentSpec, build_segmentation
from tests.annotations.sources import make_ct_series

ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
CYST = Code("367643001", "SCT", "Cyst")
ORGAN = Code("123037004", "SCT", "Anatomical Structure")
LIVER = Code("10200004", "SCT", "Liver")

# The 2022 dicom3tools in Debian 12 predates Label Map Segmentation Storage (Sup 243, 2024): it cannot find the
# IOD, and it applies the BINARY rule "SegmentNumber starts at 1" to the LABELMAP background segment 0 that the
# standard allows. These two lines, and only these, are tolerated for LABELMAP objects.
DCIODVFY_UNKNOWN_LABELMAP_LINES = (
    "Error - Information Object Not found",
    "Error - SegmentNumber not monotonically increasing from one by one - have SegmentSequence item number 1 "
    "(from one) with SegmentNumber of 0",
)


@pytest.fixture
def source_datasets() -> list[Dataset]:
    return make_ct_series()


@pytest.fixture
def source(source_datasets: list[Dataset]) -> SourceSeries:
    return SourceSeries.from_instances(source_datasets)


@pytest.fixture
def protocol_labels() -> list[ProtocolLabel]:
    return [
        ProtocolLabel("Liver lesion", ABNORMAL, NEOPLASM, (255, 64, 64)),
        ProtocolLabel("Cyst", ABNORMAL, CYST, (64, 64, 255)),
        ProtocolLabel("Liver", ORGAN, LIVER, (200, 160, 60)),
    ]


@pytest.fixture
def segment_specs(protocol_labels: list[ProtocolLabel]) -> list[SegmentSpec]:
    return [
        SegmentSpec(number, label.name, label.category, label.type, label.color)
        for number, label in enumerate(protocol_labels, start=1)
    ]


def sparse_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Three segments: a lesion on slices 3-5 only, a one-slice cyst, and a bigger organ on slices 2-8."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:9, 30:60, 30:60] = 3
    labels[3:6, 10:20, 12:22] = 1
    labels[4, 40:44, 40:47] = 2  # inside the organ: the cyst wins where they meet
    labels[5, 0, 0] = 1  # a single corner pixel: bit packing edges
    return labels


@pytest.fixture
def labels(source: SourceSeries) -> np.ndarray:
    return sparse_labels(source.shape)


@pytest.fixture
def make_seg(source: SourceSeries, labels: np.ndarray, segment_specs: list[SegmentSpec]) -> Callable[..., Dataset]:
    def make(seg_type: str = "BINARY", **kwargs: object) -> Dataset:
        return build_segmentation(
            kwargs.pop("label_array", labels),  # type: ignore[arg-type]
            source,
            segment_specs,
            series_instance_uid=str(hd.UID()),
            series_number=300,
            instance_number=1,
            author="Reader^One",
            seg_type=seg_type,  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )

    return make


def run_dciodvfy(ds: Dataset, tmp_path: Path) -> list[str]:
    """Write ``ds`` as a Part-10 file, run dciodvfy, return its output lines (the test fails if it is missing)."""
    executable = shutil.which("dciodvfy")
    assert executable, "dciodvfy (Debian package dicom3tools) is required for the conformance tests."
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120, check=False)
    return [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def dciodvfy_errors(ds: Dataset, tmp_path: Path) -> list[str]:
    lines = run_dciodvfy(ds, tmp_path)
    errors = [line for line in lines if "Error" in line]
    if str(ds.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.66.7":
        errors = [line for line in errors if line not in DCIODVFY_UNKNOWN_LABELMAP_LINES]
    return errors
