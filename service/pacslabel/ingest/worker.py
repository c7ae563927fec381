"""De-identifying forwarding workers: claim spooled instances, de-identify, store in Orthanc, catalog, clean up.

Per item: read the spool file → `Deidentifier.deidentify_bytes` (keyed and deterministic, so a redo gives the
same instance) → `OrthancClient.store_instance` (Orthanc answers AlreadyStored for a redo) → one transaction
marks the row done and records it in the catalog → the spool file is deleted. A crash anywhere before the
commit leaves the row claimed; its lease runs out (or its dead owner is noticed) and it is done again.

- Orthanc unreachable or 5xx: the rows go back to the queue, due after an exponential back-off (capped);
  nothing is dropped.
- Poison (unreadable, cannot be de-identified safely, burned-in text policy, Orthanc refuses it with 4xx): the
  file moves to quarantine/ with a PHI-free reason and is never forwarded.

Run alone with ``python -m pacslabel.ingest.worker [--processes N]``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pacslabel.catalog.service import LandedInstance, record_instances
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope
from pacslabel.ingest import queue
from pacslabel.ingest.models import IngestItem, ItemStatus
from pacslabel.ingest.queue import ClaimedItem
from pacslabel.ingest.recovery import remove_done_files
from pacslabel.ingest.routing import RoutingTable, load_routing
from pacslabel.ingest.spool import Spool
from pacslabel.settings import ConfigurationError, Settings

logger = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0
DEFAULT_BACKOFF_CAP_S = 15.0
WORKER_NICENESS = 19


@dataclass(frozen=True)
class WorkerOptions:
    batch: int = 8
    lease_s: float = DEFAULT_LEASE_S
    backoff_start_s: float = 0.5
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S
    idle_poll_s: float = 0.05  # an empty poll is one read (queue.claim), so polling often is cheap
    # Housekeeping while running, not only at start: a worker killed between its commit and its unlinks
    # leaves done files behind, and the spool must never grow without bound.
    sweep_interval_s: float = 300.0


class _Retry(Exception):
    """Orthanc could not take the instance now; the item goes back to the queue."""


class _Poison(Exception):
    """The instance must not be forwarded; the message is a PHI-free reason."""


def make_deidentifier_factory(settings: Settings, routing: RoutingTable) -> Callable[[str], tuple[Any, str]]:
    """route → (Deidentifier, burned-in text policy): the issue's default profile and "clean" unless the routes
    file names options for the route (`deid: {retain_device_identity: true, burned_in_text: quarantine}`)."""
    from pacslabel.deid import BURNED_IN_POLICIES as POLICIES
    from pacslabel.deid import DEFAULT_BURNED_IN_POLICY as DEFAULT_POLICY
    from pacslabel.deid import Deidentifier, DeidOptions

    key = settings.secret("pseudonym_key").encode()
    cache: dict[str, tuple[Any, str]] = {}

    def for_route(route: str) -> tuple[Any, str]:
        if route not in cache:
            overrides = routing.deid_overrides(route)
            policy = str(overrides.pop("burned_in_text", DEFAULT_POLICY))
            if policy not in POLICIES:
                raise ConfigurationError(f"route {route!r}: burned_in_text must be one of {', '.join(POLICIES)}")
            try:
                options = DeidOptions(**overrides)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"route {route!r}: invalid deid options ({exc})") from None
            cache[route] = (Deidentifier(key, options), policy)
        return cache[route]

    return for_route


class Worker:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, client: Any = None,
                 routing: RoutingTable | None = None, options: WorkerOptions | None = None) -> None:
        from pacslabel.orthanc.client import OrthancClient

        self.settings = settings
        self.options = options or WorkerOptions()
        self.routing = routing if routing is not None else load_routing(settings)
        self._own_engine = engine is None
        self.engine = engine if engine is not None else create_db_engine(settings.effective_database_url)
        self.factory = make_sessionmaker(self.engine)
        self._own_client = client is None
        self.client = client if client is not None else OrthancClient.from_settings(settings, pool_size=2)
        self.spool = Spool(settings.spool_dir)
        self.quarantine_dir = settings.quarantine_dir
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self.owner = queue.new_worker_id()
        self.deidentifier_for = make_deidentifier_factory(settings, self.routing)
        self._backoff = 0.0
        self.processed = 0
        self.quarantined = 0

    def close(self) -> None:
        self.spool.close()
        if self._own_client:
            self.client.close()
        if self._own_engine:
            self.engine.dispose()

    # --- loop ------------------------------------------------------------------------------------------

    def sweep(self) -> tuple[int, int]:
        """Re-queue the items of dead workers on this host and remove spool files of done items.

        Returns (re-queued, removed). Safe while the SCP and other workers run (see `remove_done_files`).
        """
        with session_scope(self.factory) as session:
            released = queue.release_dead_owners(session)
        if released:
            logger.info("re-queued %d items of dead workers on this host", released)
        removed = remove_done_files(self.spool, self.factory)
        if removed:
            logger.info("removed %d spool files of items already done (a worker died before deleting them)",
                        removed)
        return released, removed

    def run_forever(self, stop: threading.Event) -> None:
        self.sweep()
        next_sweep = time.monotonic() + self.options.sweep_interval_s
        while not stop.is_set():
            if time.monotonic() >= next_sweep:
                try:
                    self.sweep()
                except SQLAlchemyError as exc:
                    logger.error("spool sweep skipped: database error (%s)", type(exc).__name__)
                next_sweep = time.monotonic() + self.options.sweep_interval_s
            try:
                worked = self.run_once()
            except SQLAlchemyError as exc:
                logger.error("queue database error (%s); retrying", type(exc).__name__)
                stop.wait(1.0)
                continue
            if self._backoff:
                stop.wait(self._backoff)
            elif not worked:
                stop.wait(self.options.idle_poll_s)

    def run_until_idle(self, timeout_s: float = 60.0) -> int:
        """Process until no row is queued or running (tests, draining). Returns the number of claims handled."""
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            worked = self.run_once()
            total += worked
            if not worked:
                with session_scope(self.factory) as session:
                    pending = session.scalar(select(func.count()).select_from(IngestItem).where(
                        IngestItem.status.in_([ItemStatus.QUEUED, ItemStatus.RUNNING])))
                if not pending:
                    break
                time.sleep(max(self._backoff, self.options.idle_poll_s))
        return total

    def run_once(self) -> int:
        items = queue.claim(self.engine, self.owner, limit=self.options.batch, lease_s=self.options.lease_s)
        if not items:
            return 0
        landed: list[tuple[ClaimedItem, LandedInstance]] = []
        retry_from: int | None = None
        lease_renewed = time.monotonic()
        for index, item in enumerate(items):
            if time.monotonic() - lease_renewed > self.options.lease_s / 3:
                with session_scope(self.factory) as session:
                    queue.renew_lease(session, self.owner, [i.id for i in items[index:]], self.options.lease_s)
                lease_renewed = time.monotonic()
            try:
                result = self._process(item)
            except _Retry as exc:
                retry_from = index
                self._note_retry(str(exc))
                break
            except _Poison as exc:
                self._quarantine(item, str(exc))
                continue
            if result is not None:
                landed.append((item, result))
        self._finish(landed)
        if retry_from is not None:
            with session_scope(self.factory) as session:
                queue.release_for_retry(session, [i.id for i in items[retry_from:]], self.owner,
                                        self._backoff, "Orthanc unavailable; will retry")
        else:
            self._backoff = 0.0
        return len(items)

    def _note_retry(self, reason: str) -> None:
        start, cap = self.options.backoff_start_s, self.options.backoff_cap_s
        self._backoff = min(cap, max(start, self._backoff * 2))
        logger.warning("forwarding paused %.1f s: %s", self._backoff, reason)

    # --- one item --------------------------------------------------------------------------------------

    def _process(self, item: ClaimedItem) -> LandedInstance | None:
        from pacslabel.deid import DeidentificationError, apply_burned_in_policy
        from pacslabel.orthanc.client import OrthancError, OrthancUnavailable

        path = self.spool.path(item.spool_name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if self._status(item.id) != ItemStatus.RUNNING:
                return None  # another owner finished it after our lease ran out
            raise _Poison("spool file missing") from None
        deidentifier, policy = self.deidentifier_for(item.route)
        try:
            deid = deidentifier.deidentify_bytes(raw)
            deid = apply_burned_in_policy(deid, policy)  # type: ignore[arg-type]
        except DeidentificationError as exc:
            raise _Poison(f"de-identification refused: {exc}") from None
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 — unparseable input; the message may carry data, so only the type
            raise _Poison(f"cannot be read or de-identified ({type(exc).__name__})") from None
        try:
            stored = self.client.store_instance(deid.data)
        except OrthancUnavailable as exc:
            raise _Retry(f"Orthanc unavailable ({type(exc).__name__})") from None
        except OrthancError as exc:
            upstream = getattr(exc, "upstream_status", None)
            if upstream is not None and 400 <= upstream < 500 and upstream not in (401, 403, 408, 429):
                raise _Poison(f"Orthanc refused the de-identified instance (HTTP {upstream})") from None
            raise _Retry(f"Orthanc error (HTTP {upstream})") from None
        return LandedInstance(
            patient_id=deid.patient_id, study_instance_uid=deid.study_instance_uid,
            series_instance_uid=deid.series_instance_uid, sop_instance_uid=deid.sop_instance_uid,
            sop_class_uid=deid.sop_class_uid, attributes=dict(deid.attributes or {}),
            orthanc_id=stored.orthanc_id, series_orthanc_id=stored.series_orthanc_id,
            study_orthanc_id=stored.study_orthanc_id, route=item.route, source_ae=item.calling_ae,
            received_at=item.received_at)

    def _status(self, item_id: int) -> str | None:
        with session_scope(self.factory) as session:
            return session.scalar(select(IngestItem.status).where(IngestItem.id == item_id))

    def _finish(self, landed: list[tuple[ClaimedItem, LandedInstance]]) -> None:
        if not landed:
            return
        for attempt in range(5):
            try:
                # One short transaction per batch: on SQLite it holds the write lock the storage SCP needs for
                # its next queue row, so the catalog is recorded in bulk (record_instances).
                with session_scope(self.factory) as session:
                    queue.mark_many_done(session, [(item.id, instance.orthanc_id, instance.sop_instance_uid)
                                                   for item, instance in landed])
                    record_instances(session, [instance for _, instance in landed])
                break
            except DBAPIError as exc:
                # PostgreSQL may pick us as a deadlock victim when two workers upsert the same series rows;
                # everything here is idempotent, so redo the transaction.
                if attempt == 4:
                    raise
                logger.warning("finishing batch failed (%s); retrying", type(exc).__name__)
                time.sleep(0.05 * (attempt + 1))
        for item, _ in landed:
            self.spool.remove(item.spool_name)
        self.processed += len(landed)

    def _quarantine(self, item: ClaimedItem, reason: str) -> None:
        # Row first, then the move: a crash in between leaves a quarantined row with its file still in the spool,
        # which start-up recovery moves; the file is never forwarded either way.
        with session_scope(self.factory) as session:
            record = queue.quarantine(session, item.id, reason, item.spool_name)
            record_id = record.id
        try:
            os.replace(self.spool.path(item.spool_name), self.quarantine_dir / item.spool_name)
        except FileNotFoundError:
            pass
        self.quarantined += 1
        logger.warning("ingest item %d quarantined (#%d): %s", item.id, record_id, reason)


# --- processes ---------------------------------------------------------------------------------------------


def _worker_process(settings: Settings, options: WorkerOptions) -> None:
    from pacslabel.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    # The storage SCP is what a sending PACS waits on; workers only drain the durable queue, so they yield the
    # CPU. 19 rather than 10: on 2 cores the workers still kept up with one storescu (end-to-end = release +
    # ~0.1 s) and the release time was no worse (bench/RESULTS.md, ingest).
    os.nice(WORKER_NICENESS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker = Worker(settings, options=options)
    try:
        worker.run_forever(stop)
    finally:
        worker.close()


def run(settings: Settings, processes: int | None = None, options: WorkerOptions | None = None) -> None:
    """Run N worker processes (default `settings.workers`) until SIGTERM/SIGINT; one runs in this process."""
    count = settings.workers if processes is None else processes
    options = options or WorkerOptions()
    if count <= 1:
        _worker_process(settings, options)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_worker_process, args=(settings, options), name=f"worker-{n}")
                for n in range(count)]
    for child in children:
        child.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            for n, child in enumerate(children):
                if not child.is_alive():  # a crashed worker is replaced; its rows come back by lease
                    logger.error("worker process %s exited with %s; restarting", child.name, child.exitcode)
                    children[n] = context.Process(target=_worker_process, args=(settings, options), name=child.name)
                    children[n].start()
    finally:
        for child in children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(timeout=10)


def main() -> None:
    from pacslabel.logs import configure_logging
    from pacslabel.settings import load_settings

    parser = argparse.ArgumentParser(description="pacslabel de-identification/forwarding workers")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--lease-s", type=float, default=DEFAULT_LEASE_S)
    parser.add_argument("--backoff-cap-s", type=float, default=DEFAULT_BACKOFF_CAP_S)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run(settings, args.processes, WorkerOptions(batch=args.batch, lease_s=args.lease_s,
                                                backoff_cap_s=args.backoff_cap_s))


if __name__ == "__main__":
    main()
