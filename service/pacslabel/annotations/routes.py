"""JSON API of annotation versions, for work without OHIF.

``POST /api/tasks/{id}/annotations``
    - ``multipart/form-data``: ``labels`` (a ``.npy`` label array, slices sorted along the slice normal; or a
      NIfTI label map ``.nii``/``.nii.gz`` indexed [column, row, slice] whose affine and shape must be the
      source's, see annotations.nifti_upload; told apart by their bytes, not their names),
      ``segments`` (JSON ``{"1": "lesion", ...}``: segment number -> protocol label), optional ``seg_type``
      (BINARY | LABELMAP) and ``series_uid``  -> a SEG version;
    - ``application/json``: ``{"measurements": [{"value_mm", "sop_instance_uid", "points", "tracking_id"?,
      "finding"?}], "answers": {"question id": "answer"}, "series_uid"?}`` -> a TID 1500 SR version.
``GET /api/tasks/{id}/annotations``: the task's versions (its reader or an admin; 404 for anyone else).

Both go through the same save as STOW (annotations.service.save_annotation).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pacslabel.annotations import service
from pacslabel.annotations.models import AnnotationVersion
from pacslabel.annotations.nifti_upload import is_nifti, save_nifti_label_map
from pacslabel.dicomweb.multipart import parse_media_type
from pacslabel.errors import BadInput, Forbidden, NotFound
from pacslabel.orthanc.client import OrthancClient
from pacslabel.tasks import service as task_service
from pacslabel.web.api_contract import INVALID_REQUEST, MAX_ROW_ID, ROW_ID_RANGE, RowId, Text
from pacslabel.web.deps import CurrentUser, DbSession

router = APIRouter(prefix="/api/tasks", tags=["annotations"], responses=INVALID_REQUEST)

MAX_FORM_FIELD_BYTES = 1024 * 1024


class LengthBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value_mm: float = Field(ge=0)
    sop_instance_uid: Text = Field(min_length=1, max_length=64)
    points: list[tuple[float, float]] = Field(min_length=2, max_length=1000)
    tracking_id: Text | None = Field(default=None, max_length=64)
    finding: Text | None = Field(default=None, max_length=255)


class ReportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    measurements: list[LengthBody] = Field(default_factory=list, max_length=1000)
    answers: dict[Text, Text] = Field(default_factory=dict)
    series_uid: Text | None = Field(default=None, max_length=64)


def version_view(row: AnnotationVersion) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.task_id,
        "modality": row.modality,
        "version": row.version,
        "study_instance_uid": row.study_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "sop_class_uid": row.sop_class_uid,
        "created_at": row.created_at.isoformat(),
        "origin": row.origin,
        "repairs": list(row.repairs or []),
    }


def _errors(error: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in error.errors()]


async def _form_seg(request: Request) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_FORM_FIELD_BYTES)
    upload = form.get("labels")
    if not isinstance(upload, UploadFile):
        raise BadInput("Send the label array as a file field named 'labels' (a .npy, .nii or .nii.gz file).")
    raw_segments = form.get("segments")
    if not isinstance(raw_segments, str):
        raise BadInput('Send a form field segments with JSON like {"1": "lesion"}.')
    series_uid = form.get("series_uid")
    if "\x00" in raw_segments or (isinstance(series_uid, str) and "\x00" in series_uid):
        raise BadInput("segments and series_uid must not contain NUL (0x00) characters.")
    try:
        segments = json.loads(raw_segments)
    except ValueError as error:
        raise BadInput(f"segments is not valid JSON: {error}.") from error
    if not isinstance(segments, dict) or not all(isinstance(v, str) for v in segments.values()):
        raise BadInput('segments must be a JSON object of segment number -> protocol label, e.g. {"1": "lesion"}.')
    seg_type = str(form.get("seg_type") or "BINARY").upper()
    if seg_type not in ("BINARY", "LABELMAP"):
        raise BadInput(f"seg_type must be BINARY or LABELMAP, not {seg_type[:32]!r}.")
    labels = await upload.read()
    return {
        "npy": labels,
        # By the bytes; a file named .nii that is not NIfTI takes the NIfTI path too, to be told what it is not.
        "nifti": is_nifti(labels) or (upload.filename or "").lower().endswith((".nii", ".nii.gz")),
        "segments": segments,
        "seg_type": seg_type,
        "series_uid": series_uid if isinstance(series_uid, str) and series_uid else None,
    }


@router.post("/{task_id}/annotations", status_code=201)
async def save_task_annotation(task_id: RowId, request: Request, session: DbSession,
                               user: CurrentUser) -> JSONResponse:
    """Save a label array (multipart form) as a SEG version, or measurements/answers (JSON) as an SR version."""
    media = parse_media_type(request.headers.get("content-type")).value
    orthanc: OrthancClient = request.app.state.orthanc
    kind: Literal["seg", "sr"]
    if media == "multipart/form-data":
        kind, payload = "seg", await _form_seg(request)
    elif media == "application/json":
        try:
            report = ReportBody.model_validate_json(await request.body())
        except ValidationError as error:
            return JSONResponse({"detail": "invalid request", "errors": _errors(error)}, status_code=422)
        kind, payload = "sr", {"report": report}
    else:
        return JSONResponse({"detail": "Send multipart/form-data (a .npy or NIfTI label array) or application/json "
                                       "(measurements and answers)."}, status_code=415)

    fixes_param = request.query_params.get("fixes")  # on a review task: the read task the reviewer fixes
    # ASCII digits within a row id: "²".isdigit() holds but int() refuses it, and a larger number overflows the
    # database driver; both were 500s.
    if fixes_param is not None and not (fixes_param.isascii() and fixes_param.isdigit()
                                        and 1 <= int(fixes_param) <= MAX_ROW_ID):
        return JSONResponse({"detail": f"fixes must be a read task id {ROW_ID_RANGE}, not {fixes_param[:32]!r}"},
                            status_code=422)
    fixes = int(fixes_param) if fixes_param is not None else None

    def work() -> AnnotationVersion:
        task = task_service.task_for_user(session, task_id, user, act=True)
        if kind == "seg" and payload["nifti"]:
            return save_nifti_label_map(session, orthanc, user, task, payload["npy"], payload["segments"],
                                        seg_type=payload["seg_type"], series_uid=payload["series_uid"], fixes=fixes)
        if kind == "seg":
            return service.save_label_array(session, orthanc, user, task, payload["npy"], payload["segments"],
                                            seg_type=payload["seg_type"], series_uid=payload["series_uid"],
                                            fixes=fixes)
        body: ReportBody = payload["report"]
        return service.save_measurement_report(
            session, orthanc, user, task, [m.model_dump() for m in body.measurements], body.answers,
            series_uid=body.series_uid)

    row = await run_in_threadpool(work)
    return JSONResponse({"version": version_view(row)}, status_code=201)


@router.get("/{task_id}/annotations")
def list_task_annotations(task_id: RowId, session: DbSession, user: CurrentUser) -> dict[str, Any]:
    """The task's SEG and SR versions, oldest first. Another reader's task does not exist for the caller."""
    try:
        task = task_service.task_for_user(session, task_id, user)
    except Forbidden:
        raise NotFound(f"no task {task_id}") from None
    return {"task_id": task.id, "versions": service.list_versions(session, task)}
