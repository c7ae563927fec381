"""QIDO count attributes as the user may see them, against a real Orthanc and both databases:
NumberOfStudyRelatedSeries/Instances, NumberOfSeriesRelatedInstances and ModalitiesInStudy never count a
hidden series (another reader's SEG, a series outside the item) or a hidden draft (the ML role beside a
released version); admins keep Orthanc's values. Asked the way a client asks, with dicomweb-client."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import select

from pacslabel.annotations.models import AnnotationVersion
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.projects.models import ProjectItem
from pacslabel.review.models import FinalLabel
from pacslabel.users import repository as user_repository
from tests.dicomweb.gateway_world import (
    TASK_IDS,
    OrthancWorld,
    _seg,
    build_database,
    build_orthanc_world,
    free_port,
    gateway_app,
    serve,
)
from tests.fixtures.database import make_test_settings
from tests.fixtures.orthanc import RunningOrthanc
from tests.fixtures.worlds import open_task

STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES, MODALITIES = "00201206", "00201208", "00201209", "00080061"
COUNT_FIELDS = ["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy"]
READER_C_TASK = 15  # reader C reads the item too, and has saved nothing yet


@dataclass
class CountsWorld:
    world: OrthancWorld
    draft_a: str  # version 1 of reader A's SEG: a draft once version 2 is released
    released_a: str  # version 2, stored in the same series, the item's final label


@pytest.fixture(scope="module")
def counts_world(orthanc: RunningOrthanc) -> CountsWorld:
    world = build_orthanc_world(orthanc.client)
    second = _seg(world.source_datasets, world.seg_a.series, "reader_a")
    second.InstanceNumber = 2
    # Query attributes a stored file may carry from its origin (the whole study's counts, as Orthanc holds
    # it): metadata shows them, and they must not tell a reader more than QIDO does.
    series = [world.source, world.other_ct, world.seg_a, world.seg_b, world.foreign_seg]
    second.NumberOfStudyRelatedSeries = len(series)
    second.NumberOfStudyRelatedInstances = sum(len(s.sops) for s in series) + 1
    second.ModalitiesInStudy = ["CT", "SEG"]
    second.NumberOfSeriesRelatedInstances = 2
    orthanc.client.store_instances([second])
    return CountsWorld(world, draft_a=world.seg_a.sops[0], released_a=str(second.SOPInstanceUID))


@pytest.fixture
def gateway(tmp_path: Path, db_url: str, orthanc: RunningOrthanc, counts_world: CountsWorld
            ) -> Iterator[tuple[str, dict[str, str]]]:
    """The gateway world's database, plus version 2 of reader A's SEG released as the item's final label,
    and reader C's read task on the item; yields the served gateway's URL and the bearer tokens."""
    world = counts_world.world
    engine = create_db_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        tokens = build_database(session, world)
        reader_a = user_repository.get_user_by_name(session, "reader_a")
        reader_c = user_repository.get_user_by_name(session, "reader_c")
        item = session.scalar(select(ProjectItem))
        assert reader_a is not None and reader_c is not None and item is not None
        released = AnnotationVersion(
            task_id=TASK_IDS["reader_a"], study_instance_uid=world.study, series_instance_uid=world.seg_a.series,
            sop_instance_uid=counts_world.released_a, sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
            modality="SEG", version=2, author_id=reader_a.id, author_role="annotator", origin="api",
            sha256=hashlib.sha256(counts_world.released_a.encode()).hexdigest(), byte_size=1, repairs=[])
        session.add(released)
        session.flush()
        session.add(FinalLabel(item_id=item.id, source="single_read", annotation_version_id=released.id,
                               updated_at=datetime(2026, 2, 1, tzinfo=UTC)))
        open_task(session, item.project_id, item.id, reader_c.id, slot=2, task_id=READER_C_TASK)
    engine.dispose()
    port = free_port()
    settings = make_test_settings(tmp_path / "var", database_url=db_url, orthanc_url=orthanc.url,
                                  orthanc_password=orthanc.settings.secret("orthanc_password"),
                                  public_url=f"http://127.0.0.1:{port}")
    with serve(gateway_app(settings), port) as base:
        yield base, tokens


def _client(gateway: tuple[str, dict[str, str]], user: str) -> DICOMwebClient:
    base, tokens = gateway
    return DICOMwebClient(url=f"{base}/dicomweb", headers={"Authorization": f"Bearer {tokens[user]}"})


def _value(result: dict[str, Any], tag: str) -> Any:
    values = result[tag].get("Value", [])
    return values if tag == MODALITIES else values[0]


def _study_counts(client: DICOMwebClient, study: str) -> tuple[int, int, list[str]]:
    [result] = client.search_for_studies(search_filters={"StudyInstanceUID": study}, fields=COUNT_FIELDS)
    return int(_value(result, STUDY_SERIES)), int(_value(result, STUDY_INSTANCES)), list(_value(result, MODALITIES))


def _series_counts(client: DICOMwebClient, study: str, **kwargs: Any) -> dict[str, int]:
    return {r["0020000E"]["Value"][0]: int(_value(r, SERIES_INSTANCES))
            for r in client.search_for_series(study, fields=["NumberOfSeriesRelatedInstances"], **kwargs)}


def test_a_reader_counts_only_the_series_of_their_task(gateway: tuple[str, dict[str, str]],
                                                       counts_world: CountsWorld) -> None:
    w = counts_world.world
    source, seg_a = len(w.source.sops), 2  # reader A's SEG series holds both of reader A's versions
    admin = _study_counts(_client(gateway, "admin"), w.study)
    # Orthanc holds five series: the source, another CT, A's two versions, B's SEG and a foreign SEG.
    assert admin == (5, source + len(w.other_ct.sops) + seg_a + 1 + 1, ["CT", "SEG"])
    assert _study_counts(_client(gateway, "reader_a"), w.study) == (2, source + seg_a, ["CT", "SEG"])
    assert _study_counts(_client(gateway, "reader_b"), w.study) == (2, source + 1, ["CT", "SEG"])
    # Reader C has saved nothing: no SEG at all, not even the modality, though the study holds three.
    assert _study_counts(_client(gateway, "reader_c"), w.study) == (1, source, ["CT"])
    # The same attributes below a study (a client may ask for them at series and instance level).
    client = _client(gateway, "reader_b")
    # Below a study Orthanc answers no study-level count (even when asked); the series count is right for
    # series visible whole.
    client = _client(gateway, "reader_b")
    assert all(STUDY_INSTANCES not in r for r in client.search_for_series(w.study, fields=COUNT_FIELDS))
    assert _series_counts(client, w.study) == {w.source.series: source, w.seg_b.series: 1}


def test_a_reviewer_counts_the_reads_under_review(gateway: tuple[str, dict[str, str]],
                                                  counts_world: CountsWorld) -> None:
    w = counts_world.world
    reviewer = _client(gateway, "reviewer")
    assert _study_counts(reviewer, w.study) == (3, len(w.source.sops) + 2 + 1, ["CT", "SEG"])
    assert _series_counts(reviewer, w.study) == {w.source.series: len(w.source.sops), w.seg_a.series: 2,
                                                 w.seg_b.series: 1}


def test_the_ml_role_counts_the_released_version_not_the_draft_beside_it(
        gateway: tuple[str, dict[str, str]], counts_world: CountsWorld) -> None:
    w = counts_world.world
    ml = _client(gateway, "ml")
    assert _study_counts(ml, w.study) == (2, len(w.source.sops) + 1, ["CT", "SEG"])
    # Orthanc's own count of the label series includes the draft; the ML role's does not.
    assert _series_counts(_client(gateway, "admin"), w.study)[w.seg_a.series] == 2
    assert _series_counts(ml, w.study) == {w.source.series: len(w.source.sops), w.seg_a.series: 1}
    assert _series_counts(ml, None, search_filters={"StudyInstanceUID": w.study}) == {
        w.source.series: len(w.source.sops), w.seg_a.series: 1}
    [instance] = ml.search_for_instances(w.study, w.seg_a.series, fields=COUNT_FIELDS + ["00201209"])
    assert instance["00080018"]["Value"] == [counts_world.released_a]
    assert (_value(instance, STUDY_SERIES), _value(instance, STUDY_INSTANCES)) == (2, len(w.source.sops) + 1)


def test_an_admin_keeps_orthancs_counts(gateway: tuple[str, dict[str, str]], counts_world: CountsWorld) -> None:
    w = counts_world.world
    admin = _client(gateway, "admin")
    assert _study_counts(admin, w.outside.study) == (1, len(w.outside.sops), ["CT"])
    assert _series_counts(admin, w.study) == {
        w.source.series: len(w.source.sops), w.other_ct.series: len(w.other_ct.sops), w.seg_a.series: 2,
        w.seg_b.series: 1, w.foreign_seg.series: 1}


def _metadata_counts(metadata: list[dict[str, Any]], sop: str) -> tuple[int, int, list[str], int]:
    [instance] = [m for m in metadata if m["00080018"]["Value"] == [sop]]
    return (int(_value(instance, STUDY_SERIES)), int(_value(instance, STUDY_INSTANCES)),
            list(_value(instance, MODALITIES)), int(_value(instance, SERIES_INSTANCES)))


def test_counts_a_stored_file_carries_are_recounted_in_metadata(gateway: tuple[str, dict[str, str]],
                                                               counts_world: CountsWorld) -> None:
    w, released = counts_world.world, counts_world.released_a
    source = len(w.source.sops)
    admin = _client(gateway, "admin")
    as_stored = _metadata_counts(admin.retrieve_series_metadata(w.study, w.seg_a.series), released)
    assert as_stored == (*_study_counts(admin, w.study), 2)  # the file holds the whole study's counts
    reader_a = _client(gateway, "reader_a")
    assert _metadata_counts(reader_a.retrieve_series_metadata(w.study, w.seg_a.series), released) == (
        2, source + 2, ["CT", "SEG"], 2)
    assert _metadata_counts(reader_a.retrieve_study_metadata(w.study), released) == (2, source + 2, ["CT", "SEG"], 2)
    ml = _client(gateway, "ml")
    expected_ml = (2, source + 1, ["CT", "SEG"], 1)
    assert _metadata_counts(ml.retrieve_series_metadata(w.study, w.seg_a.series), released) == expected_ml
    assert _metadata_counts(ml.retrieve_study_metadata(w.study), released) == expected_ml
    instance = ml.retrieve_instance_metadata(w.study, w.seg_a.series, released)
    assert _metadata_counts([instance], released) == expected_ml
