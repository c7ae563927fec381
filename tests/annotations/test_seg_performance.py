"""Performance sanity: a 512x512x300 LABELMAP SEG with 3 labels builds in seconds (time printed, not asserted)."""

from __future__ import annotations

import time

import highdicom as hd
import numpy as np
import pytest

from pacslabel.annotations.geometry import SourceSeries
from pacslabel.annotations.seg_building import SegmentSpec, build_segmentation
from pacslabel.annotations.seg_reading import read_label_array
from tests.annotations.conftest import ABNORMAL, CYST, LIVER, NEOPLASM, ORGAN
from tests.annotations.sources import make_ct_series


@pytest.mark.slow
def test_large_labelmap_seg_builds_and_reads_back(capsys: pytest.CaptureFixture[str]) -> None:
    source = SourceSeries.from_instances(make_ct_series(slices=300, rows=512, columns=512, with_pixels=False))
    labels = np.zeros(source.shape, dtype=np.uint8)
    zz, yy, xx = np.ogrid[:300, :512, :512]
    labels[(zz - 150) ** 2 / 90**2 + (yy - 256) ** 2 / 150**2 + (xx - 256) ** 2 / 150**2 < 1] = 3
    labels[(zz - 120) ** 2 / 20**2 + (yy - 220) ** 2 / 30**2 + (xx - 220) ** 2 / 30**2 < 1] = 1
    labels[(zz - 180) ** 2 / 10**2 + (yy - 300) ** 2 / 12**2 + (xx - 300) ** 2 / 12**2 < 1] = 2
    specs = [
        SegmentSpec(1, "Liver lesion", ABNORMAL, NEOPLASM),
        SegmentSpec(2, "Cyst", ABNORMAL, CYST),
        SegmentSpec(3, "Liver", ORGAN, LIVER),
    ]

    started = time.perf_counter()
    seg = build_segmentation(
        labels,
        source,
        specs,
        series_instance_uid=str(hd.UID()),
        series_number=1,
        instance_number=1,
        author="Bench^Reader",
        seg_type="LABELMAP",
    )
    built = time.perf_counter() - started
    back = read_label_array(seg, source)
    read = time.perf_counter() - started - built

    np.testing.assert_array_equal(back, labels)
    with capsys.disabled():
        print(
            f"\n512x512x300 LABELMAP, 3 labels, {seg.NumberOfFrames} frames, {len(seg.PixelData) / 1e6:.2f} MB "
            f"({seg.file_meta.TransferSyntaxUID.name}): build {built:.2f} s, validate+read {read:.2f} s"
        )
