"""The ML branch of the access policy on its own (database only): exactly the released data, never drafts
or other reads unless the project file allows reads, the test split only with a grant, a fixed number of
queries; and the released-items contract the snapshot code builds on."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
import yaml
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from pacslabel.access.policy import AccessPolicy, take_snapshot
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.audit.models import AuditEvent
from pacslabel.errors import Conflict, Forbidden, NotFound
from pacslabel.export import grants
from pacslabel.export.released import may_see_test_split, released_items
from pacslabel.projects.models import Project, ProjectItem
from pacslabel.projects.yaml_loading import ProjectFileError, parse_project_file
from pacslabel.review.models import ConsensusResult, FinalLabel
from pacslabel.tasks.models import Task
from pacslabel.users import repository as user_repository
from pacslabel.users.models import User
from tests.access.test_policy import _world
from tests.dicomweb.gateway_world import TASK_IDS, OrthancWorld, build_database
from tests.projects.test_project_files import EXAMPLE

RELEASED = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def _user(session: Session, name: str) -> User:
    user = user_repository.get_user_by_name(session, name)
    assert user is not None
    return user


def _policy(session: Session, name: str) -> AccessPolicy:
    return AccessPolicy(session, _user(session, name))


def _version(session: Session, world: OrthancWorld, reader: str, version: int, sop: str) -> AnnotationVersion:
    seg = world.seg_a if reader == "reader_a" else world.seg_b
    row = AnnotationVersion(task_id=TASK_IDS[reader], study_instance_uid=seg.study,
                            series_instance_uid=seg.series, sop_instance_uid=sop,
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4", modality="SEG", version=version,
                            author_id=_user(session, reader).id, author_role="annotator", origin="api",
                            sha256=hashlib.sha256(sop.encode()).hexdigest(), byte_size=1, repairs=[])
    session.add(row)
    session.flush()
    return row


def _released_world(session: Session) -> tuple[OrthancWorld, ProjectItem, AnnotationVersion]:
    """The gateway world with a second version of reader A's SEG as the item's final label (single read):
    version 1 (world.seg_a.sops[0]) is now a draft in the same series."""
    world = _world()
    build_database(session, world)
    final = _version(session, world, "reader_a", 2, f"{world.study}.a.2")
    item = session.scalar(select(ProjectItem))
    assert item is not None
    session.add(FinalLabel(item_id=item.id, source="single_read", annotation_version_id=final.id, updated_at=RELEASED))
    session.flush()
    return world, item, final


def test_the_ml_role_sees_the_released_study_source_and_final_version_only(db_session: Session) -> None:
    world, _, final = _released_world(db_session)
    st, source, a = world.study, world.source.series, world.seg_a.series
    ml = _policy(db_session, "ml")
    assert ml.visible_studies() == {st}
    assert ml.visible_series(st) == {source, a}
    assert ml.can_see_instance(st, a, final.sop_instance_uid)
    assert not ml.can_see_instance(st, a, world.seg_a.sops[0])  # the draft beside it
    assert ml.restricted_instances(st) == {a: {final.sop_instance_uid}}
    assert ml.can_see_instance(st, source, world.source.sops[2])  # source series are visible whole
    for hidden in (world.seg_b.series, world.other_ct.series, world.foreign_seg.series):
        assert not ml.can_see_series(st, hidden)
    assert not ml.can_see_study(world.outside.study)
    # Readers are unaffected: reader A still sees both of their versions.
    assert _policy(db_session, "reader_a").can_see_instance(st, a, world.seg_a.sops[0])

    snapshot = take_snapshot(_policy(db_session, "ml"))
    assert snapshot.studies == frozenset({st})
    assert snapshot.can_see_instance(st, a, final.sop_instance_uid)
    assert not snapshot.can_see_instance(st, a, world.seg_a.sops[0])
    assert snapshot.restricted_instances(st, a) == frozenset({final.sop_instance_uid})
    assert snapshot.restricted_instances(st, source) is None


def test_a_label_series_holding_only_its_released_version_is_visible_whole(db_session: Session) -> None:
    world = _world()
    build_database(db_session, world)
    item = db_session.scalar(select(ProjectItem))
    assert item is not None
    only = db_session.scalar(select(AnnotationVersion).where(AnnotationVersion.task_id == TASK_IDS["reader_b"]))
    assert only is not None
    db_session.add(FinalLabel(item_id=item.id, source="single_read", annotation_version_id=only.id,
                              updated_at=RELEASED))
    db_session.flush()
    ml = _policy(db_session, "ml")
    assert ml.visible_series(world.study) == {world.source.series, world.seg_b.series}
    assert ml.restricted_instances(world.study) == {}  # the fast path: no per-instance work


def test_the_test_split_needs_an_audited_grant_and_revocation_seals_it_again(db_session: Session) -> None:
    world, item, final = _released_world(db_session)
    item.split = "test"
    db_session.flush()
    ml, admin = _user(db_session, "ml"), _user(db_session, "admin")
    assert _policy(db_session, "ml").visible_studies() == set()
    assert not may_see_test_split(db_session, ml, item.project_id)
    assert may_see_test_split(db_session, admin, item.project_id)
    assert released_items(db_session, item.project_id, include_test=False) == []

    with pytest.raises(Forbidden):
        grants.grant_test_access(db_session, _user(db_session, "reviewer"), item.project_id, "ml", "peek")
    with pytest.raises(NotFound, match="no project 'nope'"):
        grants.grant_test_access(db_session, admin, "nope", "ml", "evaluation")
    row = grants.grant_test_access(db_session, admin, "gateway", "ml", "held-out evaluation of model v3")
    with pytest.raises(Conflict):
        grants.grant_test_access(db_session, admin, item.project_id, "ml", "again")
    assert may_see_test_split(db_session, ml, item.project_id)
    assert _policy(db_session, "ml").visible_series(world.study) == {world.source.series, world.seg_a.series}
    [view] = grants.list_test_access(db_session, admin, "gateway")
    assert (view.username, view.granted_by, view.reason) == ("ml", "admin", "held-out evaluation of model v3")
    [audit] = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "test_access_grant")).all()
    assert (audit.actor, audit.object_id, audit.detail) == ("admin", str(item.project_id), {
        "user": "ml", "grant_id": row.id, "reason": "held-out evaluation of model v3"})

    grants.revoke_test_access(db_session, admin, item.project_id, "ml")
    assert not may_see_test_split(db_session, ml, item.project_id)
    assert _policy(db_session, "ml").visible_studies() == set()
    assert grants.list_test_access(db_session, admin) == []
    assert len(grants.list_test_access(db_session, admin, include_revoked=True)) == 1
    assert db_session.scalar(select(AuditEvent).where(AuditEvent.action == "test_access_revoke")) is not None


def test_individual_reads_show_only_when_the_project_file_allows_and_never_drafts(db_session: Session) -> None:
    world, item, final = _released_world(db_session)
    st = world.study
    b2 = _version(db_session, world, "reader_b", 2, f"{st}.b.2")
    reader_b_task = db_session.get(Task, TASK_IDS["reader_b"])
    assert reader_b_task is not None
    reader_b_task.status = "done"
    db_session.flush()
    assert not _policy(db_session, "ml").can_see_series(st, world.seg_b.series)  # not allowed by default

    project = db_session.get(Project, item.project_id)
    assert project is not None
    project.definition = {"export": {"individual_reads": True}}
    db_session.flush()
    ml = _policy(db_session, "ml")
    assert ml.visible_series(st) == {world.source.series, world.seg_a.series, world.seg_b.series}
    assert ml.can_see_instance(st, world.seg_b.series, b2.sop_instance_uid)
    assert not ml.can_see_instance(st, world.seg_b.series, world.seg_b.sops[0])  # reader B's draft

    reader_b_task.status = "in_progress"  # a read that is not finished is never shown
    db_session.flush()
    assert not _policy(db_session, "ml").can_see_series(st, world.seg_b.series)


def test_released_items_contract_and_unknown_sources(db_session: Session) -> None:
    world, item, final = _released_world(db_session)
    [released] = released_items(db_session, item.project_id, include_test=True)
    assert (released.item_id, released.split, released.study_instance_uid) == (item.id, "train", world.study)
    assert released.source_series_uids == (world.source.series,)
    assert released.released_at == RELEASED and released.patient_pseudonym == "P-gateway"
    [label] = released.labels
    assert (label.series_instance_uid, label.sop_instance_uid, label.modality, label.source,
            label.annotation_version_id, label.consensus_id) == (
        world.seg_a.series, final.sop_instance_uid, "SEG", "single_read", final.id, None)

    # A consensus label: the consensus SEG's own series and instance.
    consensus = ConsensusResult(item_id=item.id, method="majority", mean_dice={}, min_dice=1.0, pairs=[], inputs=[],
                                series_instance_uid=f"{world.study}.c", sop_instance_uid=f"{world.study}.c.1")
    db_session.add(consensus)
    db_session.flush()
    row = db_session.scalar(select(FinalLabel))
    assert row is not None
    row.source, row.annotation_version_id, row.consensus_id = "consensus", None, consensus.id
    db_session.flush()
    [label] = released_items(db_session, item.project_id, include_test=False)[0].labels
    assert (label.series_instance_uid, label.sop_instance_uid, label.consensus_id) == (
        f"{world.study}.c", f"{world.study}.c.1", consensus.id)
    assert _policy(db_session, "ml").visible_series(world.study) == {world.source.series, f"{world.study}.c"}

    # A source this code has never heard of, referencing no object (a classification-only ground truth):
    # the item is released with its source series and no label object; nothing fails.
    row.source, row.consensus_id = "ground_truth", None
    db_session.flush()
    [released] = released_items(db_session, item.project_id, include_test=False)
    assert released.labels == ()
    assert _policy(db_session, "ml").visible_series(world.study) == {world.source.series}


def test_the_ml_policy_takes_a_fixed_number_of_queries(db_session: Session) -> None:
    world, _, final = _released_world(db_session)
    project = db_session.scalar(select(Project))
    assert project is not None
    project.definition = {"export": {"individual_reads": True}}
    db_session.flush()
    policy = _policy(db_session, "ml")
    statements: list[str] = []
    engine = db_session.get_bind()
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        take_snapshot(policy)
        for sop in [final.sop_instance_uid, world.seg_a.sops[0], "9.9"] * 50:
            policy.can_see_instance(world.study, world.seg_a.series, sop)
        policy.restricted_instances(world.study)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) <= 7, statements


def test_the_export_section_of_the_project_file_is_checked_with_its_line() -> None:
    text = EXAMPLE.rstrip("\n") + "\nexport:\n  individual_reads: yes please\n"
    with pytest.raises(ProjectFileError) as caught:
        parse_project_file(text, "project.yaml")
    line = len(text.splitlines())
    assert str(caught.value).startswith(f"project.yaml line {line}: export.individual_reads: ")
    typo = EXAMPLE.rstrip("\n") + "\nexport:\n  individual_read: true\n"
    with pytest.raises(ProjectFileError) as caught:
        parse_project_file(typo, "project.yaml")
    assert f"line {len(typo.splitlines())}: export.individual_read" in str(caught.value)
    assert parse_project_file(EXAMPLE).export.individual_reads is False
    allowed = yaml.safe_load(EXAMPLE) | {"export": {"individual_reads": True}}
    assert parse_project_file(yaml.safe_dump(allowed)).export.individual_reads is True
