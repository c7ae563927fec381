"""Domain errors that carry their HTTP status, so routes never hand-write 4xx answers."""

from __future__ import annotations


class PacslabelError(Exception):
    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class NotFound(PacslabelError):
    status_code = 404


class Forbidden(PacslabelError):
    status_code = 403


class Unauthorized(PacslabelError):
    status_code = 401


class Conflict(PacslabelError):
    status_code = 409


class BadInput(PacslabelError):
    status_code = 400
