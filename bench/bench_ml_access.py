"""The ML role's access snapshot versus a reader's, on the same database (issue 6: few queries per request).

A migrated SQLite database gets ``--items`` released study items (one source series each, a single-read final
SEG; every other item also has a draft version in the same series, so the ML snapshot carries per-instance
restrictions), one reader with a read task on every item, and one ML user. One run computes
``take_snapshot(AccessPolicy(...))`` for each user with a fresh policy and session (what the gateway does on a
cache miss of its per-credential cache): the reader; the ML user with its released view computed afresh
(``ml-cold``: the view store emptied first, as after a new release); the ML user with the database unchanged
(``ml-warm``: the release epoch is checked and the stored view reused, ``access/release_epoch.py``).
Medians of ``--runs`` interleaved runs (wall clock, and the process's CPU time, which other processes on a
shared machine disturb less), the ratio ML / reader, and the number of SQL statements of each.

    .venv/bin/python bench/bench_ml_access.py
    .venv/bin/python bench/bench_ml_access.py --items 5000 --runs 7
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.worlds import add_study_item, catalogue_study, open_task

from pacslabel.access import release_epoch
from pacslabel.access.policy import AccessPolicy, take_snapshot
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.db.base import utcnow
from pacslabel.db.migrate import upgrade_to_head
from pacslabel.projects.models import Project
from pacslabel.review.models import FinalLabel
from pacslabel.users.models import User


def build(session: Session, items: int) -> tuple[int, int]:
    reader = User(username="reader", role="annotator")
    ml = User(username="ml", role="ml")
    session.add_all([reader, ml])
    project = Project(slug="bench", name="bench", definition={}, definition_sha256="0" * 64)
    session.add(project)
    session.flush()
    for n in range(items):
        study_uid, series_uid = f"1.2.826.0.1.{n}", f"1.2.826.0.1.{n}.1"
        study = catalogue_study(session, study_uid, series_uid, 100, pseudonym=f"P{n}", route="bench")
        item = add_study_item(session, project.id, study, [series_uid], split="train", released_at=None,
                              order_key=str(n))
        task = open_task(session, project.id, item.id, reader.id, slot=0, status="done")
        final = None
        for version in range(1, 2 + n % 2):
            sop = f"{study_uid}.9.{version}"
            final = AnnotationVersion(task_id=task.id, study_instance_uid=study_uid,
                                      series_instance_uid=f"{study_uid}.9", sop_instance_uid=sop,
                                      sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4", modality="SEG",
                                      version=version, author_id=reader.id, author_role="annotator", origin="api",
                                      sha256=hashlib.sha256(sop.encode()).hexdigest(), byte_size=1, repairs=[])
            session.add(final)
            session.flush()
        assert final is not None
        session.add(FinalLabel(item_id=item.id, source="single_read", annotation_version_id=final.id,
                               updated_at=utcnow()))
    session.flush()
    return reader.id, ml.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_to_head(url)
        engine = create_db_engine(url)
        sessions = make_sessionmaker(engine)
        with session_scope(sessions) as session:
            ids = dict(zip(("reader", "ml"), build(session, args.items), strict=True))
        names = ("reader", "ml-cold", "ml-warm")
        statements = dict.fromkeys(names, 0)
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            for name in names:
                if name == "ml-cold":
                    release_epoch.forget()
                with session_scope(sessions) as session:
                    user = session.get(User, ids[name.split("-")[0]])
                    assert user is not None
                    count: list[str] = []
                    listener = lambda *a, c=count: c.append(a[2])  # noqa: E731
                    event.listen(engine, "before_cursor_execute", listener)
                    gc.collect()  # every side starts from the same collector state (it is inside the numbers)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    snapshot = take_snapshot(AccessPolicy(session, user))
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
                    event.remove(engine, "before_cursor_execute", listener)
                    statements[name] = len(count)
                    if run == 0:
                        restricted = sum(len(v) for v in snapshot.instances.values())
                        print(f"{name}: {len(snapshot.studies or ())} studies, "
                              f"{sum(len(v) for v in snapshot.series.values())} series, "
                              f"{restricted} partly visible series, {statements[name]} SQL statements")
        medians = {name: statistics.median(values) for name, values in times.items()}
        cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
        print(f"items={args.items} runs={args.runs}")
        for name in names:
            print(f"  {name:7s} take_snapshot median {medians[name] * 1000:8.1f} ms wall, "
                  f"{cpu_medians[name] * 1000:8.1f} ms CPU, {statements[name]} SQL statements")
        for name in names[1:]:
            print(f"  ratio {name} / reader: {medians[name] / medians['reader']:.2f} wall, "
                  f"{cpu_medians[name] / cpu_medians['reader']:.2f} CPU")
        engine.dispose()


if __name__ == "__main__":
    main()
