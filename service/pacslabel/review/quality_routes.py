"""Reader quality dashboard: ``GET /api/quality/readers``, ``GET /api/quality/projects/{id}`` (JSON, or CSV with
``?format=csv``) and the server-rendered page ``GET /quality``.

Who sees what: admins every project; reviewers the projects they review (``may_review``); everyone else 403,
readers included. A reader's own numbers are withheld on purpose: repeats are shown to readers as ordinary reads
(blinding), and a count of repeats or an intra-rater number per week would tell them which reads were repeats;
per-week agreement with consensus on few items would also hint at other readers' opinions.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from pacslabel.errors import BadInput, Forbidden, NotFound, PacslabelError, Unauthorized
from pacslabel.orthanc.client import OrthancClient
from pacslabel.projects import repository as project_repository
from pacslabel.projects.models import Project
from pacslabel.projects.service import may_review, project_spec
from pacslabel.review import quality
from pacslabel.review.quality_plots import bar_chart, line_chart
from pacslabel.users.models import Role, User
from pacslabel.web.api_contract import INVALID_REQUEST
from pacslabel.web.deps import DbSession, current_user, require_roles
from pacslabel.web.pages import render

router = APIRouter(tags=["quality"], responses=INVALID_REQUEST)

QualityUser = Annotated[User, Depends(require_roles(Role.REVIEWER, Role.ADMIN))]
FORMATS = ("json", "csv")
OutputFormat = Annotated[str, Query(alias="format", max_length=16)]
# Database ids are 32-bit integers: a bigger number is a bad request (422), not a database error (500).
MAX_ID = 2**31 - 1
ProjectFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]
ProjectId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _format(value: str) -> str:
    if value not in FORMATS:
        raise BadInput("format must be 'json' or 'csv'")
    return value


def visible_projects(session: Session, user: User) -> list[Project]:
    """The projects whose quality numbers ``user`` may see (see the module docstring)."""
    if user.role == Role.ADMIN.value:
        return project_repository.list_projects(session)
    if user.role == Role.REVIEWER.value:
        return [p for p in project_repository.list_projects(session) if may_review(project_spec(p), user)]
    raise Forbidden("the quality dashboard is for reviewers and admins")


def _project(session: Session, user: User, project_id: int) -> Project:
    project = project_repository.get_project(session, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    if project.id not in {p.id for p in visible_projects(session, user)}:
        raise Forbidden(f"{user.username} is not a reviewer of project {project.slug}")
    return project


def _scope(session: Session, user: User, project_id: int | None) -> list[Project]:
    if project_id is None:
        return visible_projects(session, user)
    return [_project(session, user, project_id)]


def _orthanc(request: Request) -> OrthancClient | None:
    return getattr(request.app.state, "orthanc", None)


# --- CSV ------------------------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    return value


def _csv_response(header: Sequence[str], rows: Sequence[Sequence[Any]], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def reader_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The reader report as flat rows: one per reader and group ("overall/all" first)."""
    header = ["reader", "role", "dimension", "group", *quality.METRIC_COLUMNS, "rejection_reasons"]
    rows = []
    for reader in report["readers"]:
        groups = [("overall", {"group": "all", **reader["overall"]})]
        groups += [(d, g) for d in report["dimensions"] for g in reader["breakdowns"][d]]
        for dimension, group in groups:
            rows.append(
                [
                    reader["username"],
                    reader["role"],
                    dimension,
                    group["group"],
                    *(group[c] for c in quality.METRIC_COLUMNS),
                    group["rejection_reasons"],
                ]
            )
    return header, rows


QUESTION_STATISTICS = (
    "items_rated",
    "fleiss_raters",
    "fleiss_items",
    "fleiss_excluded",
    "fleiss_kappa",
    "krippendorff_alpha",
)
SUMMARY_STATISTICS = ("n", "median", "q1", "q3", "iqr")


def agreement_rows(slug: str, split: str, block: dict[str, Any]) -> list[list[Any]]:
    """One agreement block (overall or a split) as rows of (project, split, category, key, statistic, value)."""
    rows: list[list[Any]] = []
    for question, numbers in block["questions"].items():
        rows += [[slug, split, "question_agreement", question, s, numbers[s]] for s in QUESTION_STATISTICS]
        rows += [[slug, split, "question_answers", question, a, n] for a, n in numbers["answers"].items()]
    for label, numbers in block["segments"].items():
        rows.append([slug, split, "segment_agreement", label, "pairs", numbers["pairs"]])
        rows.append([slug, split, "segment_agreement", label, "hd95_infinite", numbers["hd95_infinite"]])
        for measure in ("dice", "hd95_mm"):
            rows += [
                [slug, split, "segment_agreement", label, f"{measure}_{s}", numbers[measure][s]]
                for s in SUMMARY_STATISTICS
            ]
    return rows


def project_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The project report as flat rows; composition rows fill ``items``/``mean_volume_ml``, agreement rows
    (split ``all`` for the whole project) ``statistic``/``value``."""
    header = ["project", "split", "category", "key", "items", "mean_volume_ml", "statistic", "value"]
    slug = report["project"]["slug"]
    rows: list[list[Any]] = []
    for split, data in report["splits"].items():
        rows.append([slug, split, "items", "all", data["items"], None])
        rows.append([slug, split, "final_labels", "all", data["final_labels"], None])
        rows += [[slug, split, "final_source", k, n, None] for k, n in data["final_sources"].items()]
        rows += [[slug, split, "label", k, v["items"], v["mean_volume_ml"]] for k, v in data["labels"].items()]
        rows += [[slug, split, f"answer:{q}", a, n, None] for q, c in data["answers"].items() for a, n in c.items()]
        for category in ("manufacturers", "institutions", "scanners", "modalities", "body_parts"):
            rows += [[slug, split, category.removesuffix("s"), k, n, None] for k, n in data[category].items()]
    rows = [[*row, None, None] for row in rows]
    agreement = report["agreement"]
    for split, block in [("all", agreement["overall"]), *agreement["splits"].items()]:
        rows += [[*row[:4], None, None, *row[4:]] for row in agreement_rows(slug, split, block)]
    return header, rows


# --- JSON API -------------------------------------------------------------------------------------------------


@router.get("/api/quality/readers")
def readers_api(
    request: Request,
    session: DbSession,
    user: QualityUser,
    project_id: ProjectFilter = None,
    output: OutputFormat = "json",
) -> Any:
    fmt = _format(output)
    projects = _scope(session, user, project_id)
    report = quality.reader_quality(session, _orthanc(request), project_ids=[p.id for p in projects])
    report["projects"] = [{"id": p.id, "slug": p.slug} for p in projects]
    if fmt == "csv":
        return _csv_response(*reader_rows(report), filename="reader-quality.csv")
    return report


@router.get("/api/quality/projects/{project_id}")
def project_api(
    project_id: ProjectId, request: Request, session: DbSession, user: QualityUser, output: OutputFormat = "json"
) -> Any:
    fmt = _format(output)
    report = quality.project_quality(session, _orthanc(request), _project(session, user, project_id))
    if fmt == "csv":
        return _csv_response(*project_rows(report), filename=f"project-{report['project']['slug']}-quality.csv")
    return report


# --- the page -------------------------------------------------------------------------------------------------


def _plots(report: dict[str, Any]) -> dict[str, Any]:
    readers = report["readers"]
    weeks = report["weeks"]
    per_week = {}
    for reader in readers:
        done = {g["group"]: g["tasks_done"] for g in reader["breakdowns"]["week"]}
        per_week[reader["username"]] = [done.get(w, 0) for w in weeks]
    names = [r["username"] for r in readers]

    def bars(metric: str) -> list[tuple[str, float | None]]:
        return [(n, r["overall"][metric]) for n, r in zip(names, readers, strict=True)]

    minutes = [(n, None if v is None else v / 60.0) for n, v in bars("median_seconds")]
    return {
        "tasks_per_week": line_chart(weeks, per_week, title="Tasks done per ISO week"),
        "consensus": bar_chart(bars("consensus_dice"), title="Agreement with consensus (mean Dice)", max_value=1.0),
        "intra": bar_chart(bars("intra_dice"), title="Intra-rater agreement (mean Dice)", max_value=1.0),
        "truth": bar_chart(
            bars("ground_truth_accuracy"), title="Agreement with ground truth (accuracy)", max_value=1.0
        ),
        "rejections": bar_chart(bars("rejection_rate"), title="Rejection rate", max_value=1.0),
        "minutes": bar_chart(minutes, title="Median time per task (claim → submit)", decimals=1, unit=" min"),
    }


def _label_plots(project_reports: list[dict[str, Any]]) -> dict[int, Any]:
    out = {}
    for report in project_reports:
        bars = [
            (f"{split} · {label}", float(data["labels"][label]["items"]))
            for split, data in report["splits"].items()
            for label in report["labels"]
        ]
        out[report["project"]["id"]] = bar_chart(bars, title="Items per label (final labels)", decimals=0)
    return out


def agreement_bars(report: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Krippendorff's alpha and Fleiss' kappa per classification question, the whole project then each split."""
    agreement = report["agreement"]
    bars: list[tuple[str, float | None]] = []
    for split, block in [("all", agreement["overall"]), *agreement["splits"].items()]:
        for question, numbers in block["questions"].items():
            bars.append((f"{split} · {question} α", numbers["krippendorff_alpha"]))
            bars.append((f"{split} · {question} κ", numbers["fleiss_kappa"]))
    return bars


def dice_bars(report: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Median pairwise Dice of the consensus inputs per segment label, the whole project then each split."""
    agreement = report["agreement"]
    return [
        (f"{split} · {label}", numbers["dice"]["median"])
        for split, block in [("all", agreement["overall"]), *agreement["splits"].items()]
        for label, numbers in block["segments"].items()
        if numbers["pairs"]
    ]


def _agreement_plots(project_reports: list[dict[str, Any]]) -> dict[int, Any]:
    out = {}
    for report in project_reports:
        slug = report["project"]["slug"]
        out[report["project"]["id"]] = {
            "answers": bar_chart(
                agreement_bars(report),
                title=f"Inter-rater agreement on answers ({slug}): Krippendorff α, Fleiss κ",
                max_value=1.0,
                min_value=-1.0,
                width=600,
                label_width=230,  # "validation · <question id> α"
            ),
            "dice": bar_chart(
                dice_bars(report), title=f"Pairwise Dice between readers ({slug}): median", max_value=1.0
            ),
        }
    return out


@router.get("/quality", include_in_schema=False)
def quality_page(request: Request, session: DbSession, project_id: ProjectFilter = None) -> Response:
    try:
        user = current_user(request, session)
    except Unauthorized:
        return RedirectResponse("/login", status_code=303)
    try:
        if user.role not in (Role.ADMIN.value, Role.REVIEWER.value):
            raise Forbidden("the quality dashboard is for reviewers and admins")
        projects = _scope(session, user, project_id)
        orthanc = _orthanc(request)
        report = quality.reader_quality(session, orthanc, project_ids=[p.id for p in projects])
        project_reports = [quality.project_quality(session, orthanc, p) for p in projects]
    except PacslabelError as exc:
        session.rollback()
        titles = {400: "Bad request", 403: "Not allowed", 404: "Not found"}
        return render(
            request,
            "error.html",
            {"title": titles.get(exc.status_code, "Error"), "message": exc.message, "status": exc.status_code},
            status_code=exc.status_code,
        )
    query = f"?project_id={project_id}" if project_id is not None else ""
    page: HTMLResponse = render(
        request,
        "quality.html",
        {
            "nav": "quality",
            "report": report,
            "plots": _plots(report),
            "project_reports": project_reports,
            "label_plots": _label_plots(project_reports),
            "agreement_plots": _agreement_plots(project_reports),
            "all_projects": visible_projects(session, user),
            "project_id": project_id,
            "metric_columns": quality.METRIC_COLUMNS,
            "query": query,
            "csv_query": f"{query}&format=csv" if query else "?format=csv",
        },
    )
    return page
