"""The leak test: de-identify the synthetic PHI-laden demo studies and find nothing original left.

The generator (``pacslabel.demo.synthetic``) records every identifying value it plants in
``manifest.json``: PHI strings, UIDs and dates. After de-identification none of them may appear anywhere:
any text value at any depth (private tags included, though none may be left), any UI value, file meta.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacslabel.deid import Deidentifier
from tests.deid.builders import KEY
from tests.deid.leak_scan import private_tags, uid_values, walk_values

synthetic = pytest.importorskip("pacslabel.demo.synthetic")

# Needles shorter than this are matched as whole words: a planted given name "Ann" inside the ordinary
# word "scanned" is not a leak, while "Ann" as a word would be.
_WHOLE_WORD_BELOW = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    outdir = tmp_path_factory.mktemp("demo")
    synthetic.generate_demo_studies(outdir, seed=7, scale="small")
    manifest = json.loads((outdir / "manifest.json").read_text(encoding="utf-8"))
    return outdir, manifest


@pytest.fixture(scope="module")
def deidentified(
    demo: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Path, Path]]:
    outdir, manifest = demo
    target = tmp_path_factory.mktemp("deidentified")
    deid = Deidentifier(KEY)
    pairs = []
    for index, entry in enumerate(manifest["files"]):
        source = outdir / entry["path"]
        result = deid.deidentify_bytes(source.read_bytes())
        written = target / f"{index:04d}.dcm"
        written.write_bytes(result.data)
        pairs.append((source, written))
    assert len(pairs) == len(manifest["files"]) > 0
    return pairs


def _read(path: Path) -> Dataset:
    return dcmread(io.BytesIO(path.read_bytes()))


def _needle_patterns(needles: list[str]) -> list[tuple[str, re.Pattern[str]]]:
    patterns = []
    for needle in needles:
        escaped = re.escape(needle)
        if len(needle) < _WHOLE_WORD_BELOW:
            escaped = rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])"
        patterns.append((needle, re.compile(escaped, re.IGNORECASE)))
    return patterns


def _text_hits(ds: Dataset, patterns: list[tuple[str, re.Pattern[str]]]) -> list[tuple[str, str]]:
    hits = []
    for occurrence in walk_values(ds):
        if occurrence.vr == "UI":  # UIDs are checked as UIDs; random digits of a 2.25 UID are not text
            continue
        for needle, pattern in patterns:
            if pattern.search(occurrence.value):
                hits.append((occurrence.path, needle))
    return hits


def test_no_original_phi_string_left_anywhere(deidentified: list[tuple[Path, Path]], demo: tuple[Path, dict]) -> None:
    patterns = _needle_patterns(demo[1]["phi_strings"])
    leaks = {
        (source.name, path, needle) for source, out in deidentified for path, needle in _text_hits(_read(out), patterns)
    }
    assert not leaks, sorted(leaks)[:20]


def test_no_original_date_left_anywhere(deidentified: list[tuple[Path, Path]], demo: tuple[Path, dict]) -> None:
    dates = demo[1]["dates"]
    assert dates
    patterns = [(date, re.compile(re.escape(date))) for date in dates]
    leaks = {
        (source.name, path, date) for source, out in deidentified for path, date in _text_hits(_read(out), patterns)
    }
    assert not leaks, sorted(leaks)[:20]


def test_no_original_uid_left_anywhere(deidentified: list[tuple[Path, Path]], demo: tuple[Path, dict]) -> None:
    originals = set(demo[1]["uids"])
    assert originals
    leaks = []
    for source, out in deidentified:
        for path, value in uid_values(_read(out)):
            if value in originals or any(uid in value for uid in originals if len(uid) > 20):
                leaks.append((source.name, path))
    assert not leaks, leaks[:20]


def test_no_private_element_left(deidentified: list[tuple[Path, Path]]) -> None:
    originals_with_private = sum(1 for source, _ in deidentified if private_tags(_read(source)))
    assert originals_with_private > 0  # the demo set does plant private elements
    leaks = {(source.name, tag) for source, out in deidentified for tag in private_tags(_read(out))}
    assert not leaks, sorted(leaks)[:20]


def test_references_between_instances_stay_consistent(deidentified: list[tuple[Path, Path]]) -> None:
    """Every reference that survives (Table E.1-1 removes Type 3 reference sequences) points at the
    new UID of the instance, series or study it pointed at before."""
    deid = Deidentifier(KEY)
    originals = [_read(source) for source, _ in deidentified]
    defined = {str(ds.SOPInstanceUID) for ds in originals} | {str(ds.SeriesInstanceUID) for ds in originals}
    defined |= {str(ds.StudyInstanceUID) for ds in originals}
    defined |= {str(ds.FrameOfReferenceUID) for ds in originals if "FrameOfReferenceUID" in ds}
    checked = 0
    for (source, out), original in zip(deidentified, originals, strict=True):
        new = dict(uid_values(_read(out)))
        for path, value in uid_values(original):
            if value in defined and path in new:
                assert new[path] == deid.remap_uid(value), (source.name, path)
                checked += 1
    assert checked > 4 * len(deidentified)


_VALUE_IN_MESSAGE = re.compile(r"<[^>]*>|=\s*\S+|\[\d+\]")


def _errors(path: Path) -> set[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return {_VALUE_IN_MESSAGE.sub("", line).strip() for line in lines if "Error" in line}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) is not installed")
def test_dciodvfy_reports_no_new_errors(deidentified: list[tuple[Path, Path]]) -> None:
    new_errors = {}
    for source, out in deidentified:
        added = _errors(out) - _errors(source)
        if added:
            new_errors[source.name] = sorted(added)
    assert not new_errors, new_errors
