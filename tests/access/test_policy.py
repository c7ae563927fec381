"""The access policy on its own (database only): who sees which study and series, in a few queries."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from pacslabel.access.policy import AccessPolicy
from pacslabel.users import repository as user_repository
from tests.dicomweb.gateway_world import OrthancWorld, Series, build_database


def _world() -> OrthancWorld:
    def series(study: str, n: str, count: int = 1) -> Series:
        return Series(study, f"{study}.{n}", [f"{study}.{n}.{i}" for i in range(count)])

    from pacslabel.annotations.models import task_series_uid
    from tests.dicomweb.gateway_world import TASK_IDS
    study, outside = "1.2.826.0.9.1", "1.2.826.0.9.2"
    seg_a = Series(study, task_series_uid(study, TASK_IDS["reader_a"], "SEG"), [f"{study}.a.1"])
    seg_b = Series(study, task_series_uid(study, TASK_IDS["reader_b"], "SEG"), [f"{study}.b.1"])
    return OrthancWorld(source=series(study, "1", 4), other_ct=series(study, "2", 2), seg_a=seg_a, seg_b=seg_b,
                        foreign_seg=series(study, "3"), outside=series(outside, "1", 2))


def _policy(session: Session, name: str) -> AccessPolicy:
    user = user_repository.get_user_by_name(session, name)
    assert user is not None
    return AccessPolicy(session, user)


def test_each_role_sees_what_its_tasks_give(db_session: Session) -> None:
    world = _world()
    build_database(db_session, world)
    st = world.study
    source, a, b = world.source.series, world.seg_a.series, world.seg_b.series

    admin = _policy(db_session, "admin")
    assert admin.visible_studies() is None and admin.visible_series(st) is None
    assert admin.can_see_series(st, world.foreign_seg.series) and admin.can_see_study(world.outside.study)

    reader_a = _policy(db_session, "reader_a")
    assert reader_a.visible_studies() == {st}
    assert reader_a.visible_series(st) == {source, a}
    assert reader_a.can_see_instance(st, a, world.seg_a.sops[0])
    assert not reader_a.can_see_series(st, b)  # another reader's SEG
    assert not reader_a.can_see_series(st, world.other_ct.series)  # not part of the item
    assert not reader_a.can_see_series(st, world.foreign_seg.series)  # a SEG outside annotation_versions
    assert not reader_a.can_see_study(world.outside.study)
    assert reader_a.visible_series(world.outside.study) == set()

    assert _policy(db_session, "reader_b").visible_series(st) == {source, b}
    assert _policy(db_session, "reviewer").visible_series(st) == {source, a, b}
    assert _policy(db_session, "arbiter").visible_series(st) == {source, a, b}
    assert _policy(db_session, "reader_c").visible_studies() == set()

    # Nothing is released in this world (no final label): the ML role sees nothing, not even the study.
    ml = _policy(db_session, "ml")
    assert ml.visible_studies() == set()
    assert not ml.can_see_series(st, source) and not ml.can_see_series(st, a)


def test_a_seg_listed_as_a_source_series_is_still_hidden(db_session: Session) -> None:
    from sqlalchemy import select

    from pacslabel.projects.models import ProjectItem
    world = _world()
    build_database(db_session, world)
    item = db_session.scalar(select(ProjectItem))
    assert item is not None
    item.series_uids = [world.source.series, world.foreign_seg.series, world.seg_b.series]
    db_session.flush()
    assert _policy(db_session, "reader_a").visible_series(world.study) == {world.source.series, world.seg_a.series}


def test_study_items_without_a_series_list_take_the_catalogues_non_annotation_series(db_session: Session) -> None:
    from sqlalchemy import select

    from pacslabel.projects.models import ProjectItem
    world = _world()
    build_database(db_session, world)
    item = db_session.scalar(select(ProjectItem))
    assert item is not None
    item.series_uids = []
    db_session.flush()
    assert _policy(db_session, "reader_a").visible_series(world.study) == {
        world.source.series, world.other_ct.series, world.seg_a.series}


def test_grants_take_a_fixed_number_of_queries(db_session: Session) -> None:
    world = _world()
    build_database(db_session, world)
    policy = _policy(db_session, "reviewer")
    statements: list[str] = []
    engine = db_session.get_bind()
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        policy.visible_studies()
        policy.grants()
        for series in [world.source.series, world.seg_a.series, world.seg_b.series, "9.9"] * 50:
            policy.can_see_series(world.study, series)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) <= 4, statements
