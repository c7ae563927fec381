"""What the JSON doors and page forms accept and how they refuse: the documented 422 shape, row-id bounds,
NUL-free text and bounded project / snapshot references (each refusal was a 500 or a schema break under fuzzing).

The app answers a request that fails validation with ``{"detail": "invalid request", "errors": [{"field",
"message"}]}`` (web/app.py), not FastAPI's default ``{"detail": [...]}``; every JSON router declares this 422
so that the published schema and the answers agree (schemathesis checks them against each other)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel


class FieldProblem(BaseModel):
    field: str
    message: str


class InvalidRequest(BaseModel):
    detail: str
    errors: list[FieldProblem]


INVALID_REQUEST: dict[int | str, dict[str, Any]] = {
    422: {"model": InvalidRequest, "description": "The request does not validate: each field and what is wrong."},
}


# Row ids are INTEGER columns: PostgreSQL's 32-bit limit is the tighter one (SQLite's is 2**63 - 1). A larger id in
# a path or body is a client error named as such, not an overflow deep in the driver answered with a 500.
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id, 1 to 2147483647.")]
ROW_ID_RANGE = f"between 1 and {MAX_ROW_ID}"


def row_id(text: str) -> int | None:
    """``text`` as a row id when it is one (ASCII digits, 1 to ``MAX_ROW_ID``), else None: for references that
    may be an id or a name (CLI arguments). ``"²".isdigit()`` is true and a 20-digit id overflows a column."""
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ROW_ID else None


def without_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL (0x00): the driver's DataError was a 500. No field of ours needs one."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (0x00) characters")
    return value


# A text field or parameter that reaches the database (or a DICOM object); used as ``Text = Field(...)``.
Text = Annotated[str, AfterValidator(without_nul)]


def bounded_reference(value: str) -> str:
    """A project or snapshot reference (slug, name or numeric id): a numeric one must be a row id.

    The services look a reference up by id when ``str.isdigit()``, which also holds for digits such as "²"
    that ``int()`` refuses and for numbers beyond any row id."""
    if value.isdigit() and not (value.isascii() and 1 <= int(value) <= MAX_ROW_ID):
        raise ValueError(f"a numeric id must be ASCII digits {ROW_ID_RANGE}")
    return without_nul(value)


Reference = Annotated[str, Path(min_length=1, max_length=128), AfterValidator(bounded_reference)]
Slug = Annotated[str, Path(min_length=1, max_length=128), AfterValidator(without_nul)]
