"""Items and splits: selection from the catalog, patient-level deterministic splits, stratification, release
stages, and sync as the catalog grows."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.projects.models import PatientSplit, ProjectItem
from pacslabel.projects.schema import Ratios
from pacslabel.projects.service import sync_project_items
from pacslabel.projects.splits import assign_splits, hashed_split
from tests.projects.helpers import add_series, apply_dict, project_dict

RATIOS = Ratios(train=0.7, validation=0.15, test=0.15)


def test_split_is_deterministic_and_independent_of_order() -> None:
    patients = [(f"P{i:04d}", None) for i in range(300)]
    first = assign_splits("proj", RATIOS, False, patients, {})
    shuffled = patients[:]
    random.Random(7).shuffle(shuffled)
    assert assign_splits("proj", RATIOS, False, shuffled, {}) == first
    # Keyed by the project: another project splits the same patients differently.
    other = assign_splits("other-proj", RATIOS, False, patients, {})
    assert other != first


def test_split_ratios_are_approximately_respected() -> None:
    counts = Counter(hashed_split("proj", f"P{i:05d}", RATIOS) for i in range(5000))
    assert abs(counts["train"] / 5000 - 0.70) < 0.03
    assert abs(counts["validation"] / 5000 - 0.15) < 0.02
    assert abs(counts["test"] / 5000 - 0.15) < 0.02


def test_stratification_balances_each_manufacturer() -> None:
    patients = [(f"GE{i:03d}", "GE") for i in range(40)] + [(f"SI{i:03d}", "Siemens") for i in range(400)]
    result = assign_splits("proj", RATIOS, True, patients, {})
    per_stratum: dict[str, Counter[str]] = defaultdict(Counter)
    for split, stratum in result.values():
        per_stratum[stratum or ""][split] += 1
    for stratum, total in (("GE", 40), ("Siemens", 400)):
        counts = per_stratum[stratum]
        # Largest-deficit assignment keeps every split within one patient of its target share.
        assert abs(counts["train"] - 0.7 * total) <= 1
        assert abs(counts["validation"] - 0.15 * total) <= 1
        assert abs(counts["test"] - 0.15 * total) <= 1


def test_one_patient_never_spans_two_splits(db_session: Session) -> None:
    rng = random.Random(3)
    for p in range(120):
        for s in range(rng.randint(1, 4)):
            add_series(db_session, f"PAT{p:03d}", f"study{s}", "t2", description="t2_tse_tra")
            add_series(db_session, f"PAT{p:03d}", f"study{s}", "adc", description="ep2d_diff ADC")
    project = apply_dict(db_session, project_dict())
    result = sync_project_items(db_session, project)
    items = db_session.scalars(select(ProjectItem)).all()
    assert result.added == len(items) > 120
    by_patient: dict[int, set[str]] = defaultdict(set)
    for item in items:
        by_patient[item.patient_id].add(item.split)
        assert len(item.series_uids) == 2  # a study item carries all its matching series
    assert all(len(splits) == 1 for splits in by_patient.values())
    stored = {row.patient_id: row.split for row in db_session.scalars(select(PatientSplit))}
    assert all(stored[pid] == next(iter(splits)) for pid, splits in by_patient.items())
    # Syncing again changes nothing.
    again = sync_project_items(db_session, project)
    assert (again.added, again.updated, again.new_patients) == (0, 0, 0)


def test_selection_filters_routes_modalities_and_descriptions(db_session: Session) -> None:
    add_series(db_session, "A", "s1", "t2", description="t2_tse_tra")
    add_series(db_session, "A", "s1", "loc", description="localizer")
    add_series(db_session, "B", "s1", "ct", modality="CT", description="t2 lookalike")
    add_series(db_session, "C", "s1", "t2", route="other-route")
    add_series(db_session, "D", "s1", "t2", instances=3)
    add_series(db_session, "E", "s1", "dwi", description="ep2d_diff")
    selection = {"item": "series", "routes": ["prostate-mri"], "modalities": ["mr"],
                 "series_description": ["(?i)t2", "(?i)diff"], "exclude_series_description": ["(?i)localizer"],
                 "min_instances": 10}
    project = apply_dict(db_session, project_dict(selection=selection))
    sync_project_items(db_session, project)
    items = db_session.scalars(select(ProjectItem).order_by(ProjectItem.id)).all()
    assert len(items) == 2 and {i.unit for i in items} == {"series"}


def test_new_items_are_added_as_the_catalog_grows_and_late_series_join_their_study(db_session: Session) -> None:
    add_series(db_session, "A", "s1", "t2")
    project = apply_dict(db_session, project_dict())
    assert sync_project_items(db_session, project).added == 1
    add_series(db_session, "A", "s1", "adc", description="adc")
    add_series(db_session, "B", "s1", "t2")
    result = sync_project_items(db_session, project)
    assert (result.added, result.updated) == (1, 1)
    item_a = db_session.scalars(select(ProjectItem).order_by(ProjectItem.id)).first()
    assert item_a is not None and len(item_a.series_uids) == 2


def test_series_still_receiving_are_not_items_yet(db_session: Session) -> None:
    add_series(db_session, "A", "s1", "t2", age_s=5)
    project = apply_dict(db_session, project_dict())
    assert sync_project_items(db_session, project, quiet_s=60).added == 0
    assert sync_project_items(db_session, project, quiet_s=1).added == 1


def test_release_stages_calibration_then_first_batch_then_held(db_session: Session) -> None:
    for p in range(30):
        add_series(db_session, f"P{p:02d}", "s1", "t2")
    release = {"calibration": {"items": 3, "split": "train"}, "first_batch": {"items": 10}, "continuous": False}
    project = apply_dict(db_session, project_dict(release=release))
    result = sync_project_items(db_session, project)
    items = db_session.scalars(select(ProjectItem)).all()
    stages = Counter(i.stage for i in items)
    assert stages == {"calibration": 3, "first_batch": 10, "continuous": 17}
    assert all(i.split == "train" for i in items if i.stage == "calibration")
    assert result.released == 13
    assert all(i.released_at is None for i in items if i.stage == "continuous")
