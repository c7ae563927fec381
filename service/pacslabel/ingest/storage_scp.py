"""The storage SCP: C-ECHO and C-STORE for every storage SOP class, an AE allow-list, and a durable spool.

The C-STORE handler does not decode the data set: it peeks at the first elements (SOP Class/Instance UID) to
refuse obvious garbage, writes preamble + file meta + the received bytes to the spool, fsyncs, renames, commits
the queue row, and only then returns Success — the response is sent after the handler returns, so Success
means durable and queued. Any failure on that path answers with a failure status, never Success.

Run alone with ``python -m pacslabel.ingest.storage_scp`` (settings from ``PACSLABEL_*``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import deque
from io import BytesIO
from typing import Any

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom._globals import ALL_TRANSFER_SYNTAXES
from pynetdicom.sop_class import Verification
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.ingest import dimse_status as status
from pacslabel.ingest import queue
from pacslabel.ingest.recovery import lock_spool, recover_spool
from pacslabel.ingest.routing import RoutingTable, check_for_production, load_routing
from pacslabel.ingest.spool import Spool, part10_header
from pacslabel.settings import Settings

logger = logging.getLogger(__name__)

# Storage classes we make sure of even if pynetdicom's list changes (SEG, Label Map SEG, SR family).
REQUIRED_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
)
# Association rejection: permanent, by the service user, "calling AE title not recognised" (PS3.8 9.3.4).
REJECT_PERMANENT, REJECT_SOURCE_USER, REJECT_CALLING_AE = 0x01, 0x01, 0x03
_LAST_HEADER_TAG = 0x00080018  # SOP Instance UID: everything we peek at comes before it


def quiet_pynetdicom_identifiers() -> None:
    # pynetdicom would otherwise log C-FIND/C-STORE identifiers (names, UIDs) at debug level.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def check_dataset_header(stream: BytesIO, transfer_syntax: str, sop_class_uid: str,
                         sop_instance_uid: str) -> tuple[int, str] | None:
    """Cheap sanity check of the received bytes: a failure status and PHI-free comment, or None if plausible.

    Reads only the elements up to (0008,0018); a truncated tail is found later by the worker (quarantine).
    """
    ts = UID(transfer_syntax)
    if ts == DeflatedExplicitVRLittleEndian:
        return None  # compressed stream: no cheap peek; the worker checks it
    stream.seek(0)
    try:
        ds = read_dataset(stream, ts.is_implicit_VR, ts.is_little_endian,
                          stop_when=lambda tag, vr, length: tag > _LAST_HEADER_TAG)
        if len(ds) == 0:
            return status.CANNOT_UNDERSTAND, "data set does not start with DICOM elements"
        found_class = str(ds.get("SOPClassUID", "") or "").strip()
        found_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    except Exception:  # noqa: BLE001 — any decoding problem means we cannot understand the bytes
        return status.CANNOT_UNDERSTAND, "data set cannot be read"
    finally:
        stream.seek(0)
    if not found_uid:
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set has no SOP Instance UID"
    if not found_class:
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set has no SOP Class UID"
    if found_class != sop_class_uid.strip():
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the C-STORE request"
    if found_uid != sop_instance_uid.strip():
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOP Instance UID differs from the C-STORE request"
    return None


class StorageSCP:
    """One SCP process: owns the spool directory, writes queue rows, answers C-ECHO/C-STORE."""

    def __init__(self, settings: Settings, *, routing: RoutingTable | None = None,
                 engine: Engine | None = None) -> None:
        self.settings = settings
        self.routing = routing if routing is not None else load_routing(settings)
        check_for_production(settings, self.routing)
        self._own_engine = engine is None
        self.engine = engine if engine is not None else create_db_engine(settings.effective_database_url)
        self.factory = make_sessionmaker(self.engine)
        self._lock_fd = lock_spool(settings.spool_dir)
        self.spool = Spool(settings.spool_dir)
        self.key = settings.secret("pseudonym_key").encode()
        self.min_free_bytes = settings.scp_min_free_bytes
        self.ae = self._build_ae()
        self._server: Any = None
        # Idle queue connections, reused across C-STOREs and associations: a pool checkout (and, on PostgreSQL,
        # its pre-ping round trip) per instance is time the sender waits. deque.append/pop are thread-safe.
        self._idle: deque[Connection] = deque()

    def _build_ae(self) -> AE:
        quiet_pynetdicom_identifiers()
        ae = AE(ae_title=self.settings.scp_ae_title)
        ae.maximum_pdu_size = 0  # unlimited: +35-40 % throughput (performance notes §1)
        ae.maximum_associations = self.settings.scp_max_associations
        ae.require_called_aet = False  # the called AE title selects a route
        abstract = [cx.abstract_syntax for cx in AllStoragePresentationContexts]
        abstract += [uid for uid in REQUIRED_STORAGE_CLASSES if uid not in abstract]
        for uid in abstract:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES[:4])
        return ae

    # --- lifecycle -------------------------------------------------------------------------------------

    def recover(self) -> None:
        recover_spool(self.spool, self.settings.quarantine_dir, self.factory, self.routing, self.key)

    def start(self) -> None:
        self.recover()
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_C_STORE, self._on_store)]
        address = (self.settings.scp_host, self.settings.scp_port)
        self._server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        logger.info("storage SCP %s listening on %s:%d", self.settings.scp_ae_title, *address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        while self._idle:
            self._idle.pop().close()
        self.spool.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the spool lock
            self._lock_fd = -1
        if self._own_engine:
            self.engine.dispose()

    # --- handlers --------------------------------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        host = assoc.requestor.address
        if not self.routing.is_allowed(calling, host):
            # AE titles and addresses are configuration, not patient data.
            logger.warning("association rejected: calling AE title not recognised",
                           extra={"calling_ae": calling, "peer": host})
            assoc.acse.send_reject(REJECT_PERMANENT, REJECT_SOURCE_USER, REJECT_CALLING_AE)
            # As pynetdicom's own rejection path does: wait for the DUL to send the A-ASSOCIATE-RJ before the
            # socket is closed, or the peer sees an abort instead of the reason.
            assoc.kill()

    def _on_echo(self, event: evt.Event) -> int:
        return status.SUCCESS

    def _on_store(self, event: evt.Event) -> int | Dataset:
        try:
            return self._store(event)
        except Exception as exc:  # noqa: BLE001 — never let an error become Success; no message (may hold data)
            logger.error("C-STORE handler failed: %s", type(exc).__name__)
            return status.with_comment(status.PROCESSING_FAILURE, "internal error")

    def _store(self, event: evt.Event) -> int | Dataset:
        request = event.request
        sop_class = str(request.AffectedSOPClassUID or "").strip()
        sop_uid = str(request.AffectedSOPInstanceUID or "").strip()
        stream = request.DataSet
        if not sop_class or not sop_uid or not isinstance(stream, BytesIO):
            return status.with_comment(status.CANNOT_UNDERSTAND, "request without SOP Class/Instance UID")
        problem = check_dataset_header(stream, event.context.transfer_syntax, sop_class, sop_uid)
        if problem is not None:
            logger.warning("C-STORE refused: %s", problem[1], extra={"status": problem[0]})
            return status.with_comment(*problem)
        size = stream.getbuffer().nbytes
        if self.spool.free_bytes() < self.min_free_bytes + size:
            logger.error("C-STORE refused: spool disk below the free-space watermark")
            return status.with_comment(status.OUT_OF_RESOURCES, "spool disk full")

        calling = str(event.assoc.requestor.ae_title).strip()
        called = str(event.assoc.requestor.primitive.called_ae_title).strip()
        header = part10_header(sop_class, sop_uid, event.context.transfer_syntax)
        try:
            with stream.getbuffer() as view:
                spooled = self.spool.write((header, view), calling, called)
        except OSError as exc:
            logger.error("C-STORE refused: spool write failed (%s)", exc.strerror or type(exc).__name__)
            return status.with_comment(status.OUT_OF_RESOURCES, "spool write failed")
        try:
            item_id = self._enqueue(
                spool_name=spooled.name, sop_class_uid=sop_class,
                sop_uid_hmac=queue.sop_uid_digest(self.key, sop_uid), calling_ae=calling, called_ae=called,
                source_host=event.assoc.requestor.address, route=self.routing.route_for(calling, called),
                size_bytes=spooled.size)
        except SQLAlchemyError as exc:
            # Not acknowledged, so not kept: the sender keeps its copy and retries.
            self.spool.remove(spooled.name)
            logger.error("C-STORE refused: queue database unavailable (%s)", type(exc).__name__)
            return status.with_comment(status.QUEUE_UNAVAILABLE, "queue database unavailable")
        logger.debug("queued ingest item %d", item_id)
        return status.SUCCESS

    def _enqueue(self, **values: Any) -> int:
        """Insert and commit one queue row on an idle connection (a new one if none is idle)."""
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.engine.connect()
        try:
            with conn.begin():
                item_id = queue.enqueue(conn, **values)
        except BaseException:
            conn.close()  # not reused: it may be broken (database restarted, disk error)
            raise
        self._idle.append(conn)
        return item_id


def run(settings: Settings) -> None:
    """Run the SCP until SIGTERM/SIGINT."""
    scp = StorageSCP(settings)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    scp.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        scp.stop()
        logger.info("storage SCP stopped")


def main() -> None:
    from pacslabel.logs import configure_logging
    from pacslabel.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run(settings)


if __name__ == "__main__":
    main()
