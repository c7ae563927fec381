"""STOW-RS of annotations: ``POST /dicomweb/studies[/{study}]`` (PS3.18 §10.5), what OHIF's "save" sends.

Every part goes through :func:`pacslabel.annotations.service.save_annotation`: it must be a SEG or SR of
the caller's open task, pass validation, and is stored as a NEW version (new SOP Instance UID in the task's
own series); nothing else is ever written to Orthanc through this door. The stored file re-encodes only the
header elements the save changes; the per-frame groups and pixel data are the bytes that arrived
(``annotations.part10_splice``).

Answer (PS3.18 Table 10.5.3-1 and §10.5.3.1; a choice where the standard leaves room):

- 200 every part stored; 202 some stored, some failed; 409 none stored (each with a STOW response body,
  ``application/dicom+json``: ReferencedSOPSequence, FailedSOPSequence, RetrieveURL);
- whole-request problems answer ``{"detail": ...}``: 415 wrong media type, 413 too large, 400 malformed
  multipart, 401/403 from authentication.

ReferencedSOPSequence names the NEW version's SOP Class/Instance UIDs and RetrieveURL, with WarningReason
0xB000 (coercion of data elements: the UIDs and series are the gateway's, not the ones sent). A FailedSOPSequence
item echoes only the UIDs the client sent, the FailureReason, and a human-readable reason in a private
element (0009,1001) LT of private creator "pacslabel" (PS3.5 §7.8; PS3.18 has no standard text slot).
Nothing in the answer names another reader's objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pacslabel.annotations.models import AnnotationOrigin
from pacslabel.annotations.part10_splice import ReceivedPart10, read_part10
from pacslabel.annotations.service import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    failure_reason_of,
    save_annotation,
)
from pacslabel.dicomweb.multipart import (
    DEFAULT_MAX_BYTES,
    Part,
    PayloadTooLarge,
    parse_multipart_related,
    related_boundary,
)
from pacslabel.errors import BadInput, PacslabelError
from pacslabel.orthanc.client import OrthancClient
from pacslabel.users.models import User
from pacslabel.web.deps import CurrentUser, DbSession

logger = logging.getLogger(__name__)

stow_router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
COERCION_OF_DATA_ELEMENTS = 0xB000
PRIVATE_CREATOR = "pacslabel"
# (0009,0010) reserves block 0x10 of group 0009 for PRIVATE_CREATOR; (0009,1001) is its reason text.
PRIVATE_CREATOR_TAG = "00090010"
PRIVATE_REASON_TAG = "00091001"
MAX_REASON_LENGTH = 1024
REQUIRED_IDENTITY = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True)
class Stored:
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Failed:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure_reason: int
    reason: str


def max_stow_bytes(request: Request) -> int:
    """The request size limit: app.state.stow_max_bytes, else Settings.stow_max_bytes, else 2 GiB."""
    configured = getattr(request.app.state, "stow_max_bytes", None)
    if configured is None:
        configured = getattr(getattr(request.app.state, "settings", None), "stow_max_bytes", None)
    return int(configured or DEFAULT_MAX_BYTES)


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its announced Content-Length) exceeds ``limit``."""
    announced = request.headers.get("content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise BadInput("Content-Length is not a number.") from None
        if length > limit:
            raise PayloadTooLarge(f"The STOW request is {length} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The STOW request exceeds the limit of {limit} bytes.")
    return b"".join(chunks)  # the one copy of the body (a growing bytearray would copy it again and again)


def _us(value: int) -> dict[str, Any]:
    return {"vr": "US", "Value": [value]}


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _retrieve_url(base_url: str, *uids: str) -> str:
    levels = ("studies", "series", "instances")
    return base_url.rstrip("/") + "/dicomweb/" + "/".join(f"{level}/{uid}" for level, uid in zip(levels, uids,
                                                                                                strict=False))


def stow_response(base_url: str, stored: list[Stored], failed: list[Failed]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, PS3.18 STOW response in DICOM JSON)."""
    body: dict[str, Any] = {}
    if stored:
        body["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base_url, stored[0].study_uid)]}
    body["00081198"] = {"vr": "SQ", "Value": [
        {
            "00081150": _ui(item.sop_class_uid),
            "00081155": _ui(item.sop_instance_uid),
            "00081197": _us(item.failure_reason),
            PRIVATE_CREATOR_TAG: {"vr": "LO", "Value": [PRIVATE_CREATOR]},
            PRIVATE_REASON_TAG: {"vr": "LT", "Value": [item.reason[:MAX_REASON_LENGTH]]},
        }
        for item in failed
    ]}
    body["00081199"] = {"vr": "SQ", "Value": [
        {
            "00081150": _ui(item.sop_class_uid),
            "00081155": _ui(item.sop_instance_uid),
            "00081190": {"vr": "UR", "Value": [
                _retrieve_url(base_url, item.study_uid, item.series_uid, item.sop_instance_uid)]},
            "00081196": _us(COERCION_OF_DATA_ELEMENTS),
        }
        for item in stored
    ]}
    status = 200 if not failed else (202 if stored else 409)
    return status, body


def _read_part(index: int, part: Part) -> ReceivedPart10:
    if part.content_type not in (None, "application/dicom"):
        raise _PartFailure(SOP_CLASS_NOT_SUPPORTED,
                           f"Part {index} is {part.content_type}, not application/dicom.")
    try:
        # The received bytes are kept: the stored version reuses those of every element it does not change.
        received = read_part10(part.content)
    except Exception as error:  # pydicom raises several types for bad bytes; all mean the same here
        raise _PartFailure(CANNOT_UNDERSTAND,
                           f"Part {index} is not a DICOM Part-10 instance ({type(error).__name__}: "
                           f"{str(error)[:200]}).") from error
    # pydicom stops quietly at the end of a truncated file; an instance without its identity is not one.
    missing = [keyword for keyword in REQUIRED_IDENTITY if not received.dataset.get(keyword)]
    if missing:
        raise _PartFailure(CANNOT_UNDERSTAND, f"Part {index} is not a complete DICOM instance (no "
                                              f"{', '.join(missing)}); it may be truncated.")
    return received


class _PartFailure(Exception):
    def __init__(self, failure_reason: int, reason: str) -> None:
        super().__init__(reason)
        self.failure_reason = failure_reason
        self.reason = reason


def store_parts(session: Session, orthanc: OrthancClient, user: User, parts: list[Part],
                path_study_uid: str | None, base_url: str) -> tuple[int, dict[str, Any]]:
    """Save every part as a version (each commits on its own); a failed part never harms another."""
    stored: list[Stored] = []
    failed: list[Failed] = []
    if not parts:
        raise BadInput("The STOW request contains no parts.")
    for index, part in enumerate(parts, start=1):
        sop_class: str | None = None
        sop_instance: str | None = None
        try:
            received = _read_part(index, part)
            dataset = received.dataset
            sop_class = str(dataset.get("SOPClassUID", "")) or None
            sop_instance = str(dataset.get("SOPInstanceUID", "")) or None
            study_uid = str(dataset.get("StudyInstanceUID", ""))
            if path_study_uid is not None and study_uid != path_study_uid:
                raise _PartFailure(DATASET_DOES_NOT_MATCH,
                                   f"Part {index}: StudyInstanceUID {study_uid or '(missing)'} differs from the "
                                   f"study in the request URL {path_study_uid}.")
            row = save_annotation(session, orthanc, user, dataset, origin=AnnotationOrigin.OHIF, received=received)
            stored.append(Stored(row.study_instance_uid, row.series_instance_uid, row.sop_class_uid,
                                 row.sop_instance_uid))
        except _PartFailure as failure:
            session.rollback()
            failed.append(Failed(sop_class, sop_instance, failure.failure_reason, failure.reason))
        except PacslabelError as error:
            session.rollback()
            failed.append(Failed(sop_class, sop_instance, failure_reason_of(error), error.message))
        except Exception as error:
            # Unexpected: most often a dataset pydicom read but whose elements are broken. Stored nothing.
            session.rollback()
            logger.exception("STOW part %d failed unexpectedly", index)
            reason = PROCESSING_FAILURE if sop_class is None else CANNOT_UNDERSTAND
            failed.append(Failed(sop_class, sop_instance, reason,
                                 f"Part {index} could not be processed ({type(error).__name__})."))
    for failure in failed:
        logger.info("STOW by %s refused %s: %s (0x%04X)", user.username, failure.sop_instance_uid,
                    failure.reason, failure.failure_reason)
    return stow_response(base_url, stored, failed)


async def _stow(request: Request, session: Session, user: User, study_uid: str | None) -> JSONResponse:
    boundary = related_boundary(request.headers.get("content-type"))
    body = await read_body_limited(request, max_stow_bytes(request))
    orthanc: OrthancClient = request.app.state.orthanc

    def work() -> tuple[int, dict[str, Any]]:
        # Parsing and saving are blocking (pydicom, numpy, the sync Orthanc client): off the event loop.
        parts = parse_multipart_related(body, boundary)
        return store_parts(session, orthanc, user, parts, study_uid, str(request.base_url))

    status, answer = await run_in_threadpool(work)
    return JSONResponse(answer, status_code=status, media_type=DICOM_JSON)


@stow_router.post("/studies")
async def stow_studies(request: Request, session: DbSession, user: CurrentUser) -> JSONResponse:
    """STOW-RS of SEG/SR annotations (OHIF "save"); see the module docstring for the answer."""
    return await _stow(request, session, user, None)


@stow_router.post("/studies/{study_uid}")
async def stow_study(study_uid: str, request: Request, session: DbSession, user: CurrentUser) -> JSONResponse:
    """STOW-RS into one study: a part of another study fails with FailureReason 0xA900."""
    return await _stow(request, session, user, study_uid)
