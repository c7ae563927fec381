"""storescu → storage SCP → spool/queue → worker → Orthanc: everything lands de-identified, nothing leaks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from pacslabel.catalog import repository as catalog_repository
from pacslabel.catalog.models import CatalogSeries, CatalogStudy
from pacslabel.catalog.service import is_complete
from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.demo.synthetic import DemoSet, generate_demo_studies
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.ingest.worker import Worker
from tests.fixtures.orthanc import RunningOrthanc
from tests.ingest.conftest import ingest_settings, running_scp
from tests.ingest.helpers import storescu

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSet:
    return generate_demo_studies(tmp_path_factory.mktemp("demo"), seed=7, scale="small")


def _without_pixels(raw: bytes) -> bytes:
    ds = dcmread(BytesIO(raw))
    if "PixelData" in ds and len(ds.PixelData) > 64:
        return raw.replace(ds.PixelData, b"")  # random pixel bytes could match a short string by chance
    return raw


def _leaks(raw: bytes, manifest: dict[str, Any]) -> list[str]:
    text = _without_pixels(raw)
    found = []
    for value in manifest["phi_strings"]:
        for encoding in ("utf-8", "latin-1"):
            try:
                needle = value.encode(encoding)
            except UnicodeEncodeError:
                continue
            if needle in text:
                found.append(f"phi:{value!r}")
    found += [f"uid:{uid}" for uid in manifest["uids"] if uid.encode() in text]
    found += [f"date:{d}" for d in manifest["dates"] + manifest["datetimes"] if d.encode() in text]
    return found


@pytest.fixture
def pipeline(tmp_path: Path, db_url: str, orthanc: RunningOrthanc) -> Iterator[Any]:
    settings = ingest_settings(tmp_path / "var", db_url, orthanc, scp_allowed_callers="CT1,PACS2")
    with running_scp(settings):
        worker = Worker(settings)
        try:
            yield settings, worker
        finally:
            worker.close()


def test_storescu_send_lands_deidentified_in_orthanc_without_any_original_phi(
        pipeline: Any, demo: DemoSet, orthanc: RunningOrthanc) -> None:
    settings, worker = pipeline
    manifest = json.loads(demo.manifest_path.read_text())
    patient02 = next(p for p in demo.patients if len(p.studies) == 2)
    second = patient02.studies[1]
    second_files = {i.path for s in second.series for i in s.instances}
    first_files = [f for f in demo.files if f not in second_files]

    # Two separate sends, days apart in the data: the same patient's second study comes on its own.
    sent = storescu(settings.scp_port, first_files, calling="CT1")
    assert sent.returncode == 0, sent.stderr[-2000:]
    worker.run_until_idle(timeout_s=120)
    sent = storescu(settings.scp_port, sorted(second_files), calling="PACS2")
    assert sent.returncode == 0, sent.stderr[-2000:]
    worker.run_until_idle(timeout_s=120)

    engine = create_db_engine(settings.effective_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            rows = list(session.scalars(select(IngestItem)))
            assert len(rows) == len(demo.files)
            assert {row.status for row in rows} == {ItemStatus.DONE}, [row.last_error for row in rows]
            # Every instance is in Orthanc, and nothing original survived (nested sequences, private tags included).
            leaks: dict[str, list[str]] = {}
            downloaded = {}
            for row in rows:
                assert row.orthanc_id
                raw = orthanc.client.get_instance_file(row.orthanc_id)
                downloaded[row.id] = dcmread(BytesIO(raw))
                found = _leaks(raw, manifest)
                if found:
                    leaks[row.deid_sop_instance_uid or str(row.id)] = found
            assert leaks == {}

            # The screen capture with burned-in identifiers was cleaned and says so (113101).
            captures = [ds for ds in downloaded.values() if ds.get("Modality") == "OT"]
            assert captures
            for ds in captures:
                codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
                assert "113101" in codes and ds.BurnedInAnnotation == "NO"

            # Same pseudonymous patient across both sends; the interval between study dates is preserved.
            studies = {
                ds.StudyInstanceUID: ds for ds in downloaded.values() if ds.Modality != "OT"
            }
            by_patient: dict[str, set[str]] = {}
            for ds in studies.values():
                by_patient.setdefault(str(ds.PatientID), set()).add(str(ds.StudyDate))
            assert len(by_patient) == len(demo.patients)
            two = [sorted(dates) for dates in by_patient.values() if len(dates) == 2]
            assert len(two) == 1

            def _d(text: str) -> date:
                return date(int(text[:4]), int(text[4:6]), int(text[6:]))

            original = sorted(s.study_date for s in patient02.studies)
            assert _d(two[0][1]) - _d(two[0][0]) == _d(original[1]) - _d(original[0])
            assert two[0] != original

            # The catalog mirrors what landed: pseudonyms only, counts per series, route and source AE.
            counts = catalog_repository.counts(session)
            assert counts == {"patients": len(demo.patients), "studies": sum(len(p.studies) for p in demo.patients),
                              "series": len(demo.series()), "instances": len(demo.files)}
            series = list(session.scalars(select(CatalogSeries)))
            expected_sizes = sorted(len(s.instances) for s in demo.series())
            assert sorted(s.instance_count for s in series) == expected_sizes
            assert {s.source_ae for s in series} == {"CT1", "PACS2"}
            assert {s.route for s in series} == {"default"}
            assert all(is_complete(s, settings.series_stable_s, s.last_received_at + timedelta(seconds=2))
                       for s in series)
            catalog_text = json.dumps([[str(v) for v in vars(o).values()] for o in
                                       series + list(session.scalars(select(CatalogStudy)))])
            assert [v for v in manifest["phi_strings"] + manifest["uids"] if v in catalog_text] == []
    finally:
        engine.dispose()
    # Processed files leave the spool.
    assert list(settings.spool_dir.glob("*.dcm")) == []
