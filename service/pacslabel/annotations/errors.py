"""The one error the annotations library raises for a rejected SEG, SR or label array."""

from __future__ import annotations

from pacslabel.errors import PacslabelError


class AnnotationRejected(PacslabelError, ValueError):
    """An annotation object or array that must not be stored; the message says exactly why.

    It is a :class:`ValueError` (highdicom style: bad input is a value error) and a
    :class:`~pacslabel.errors.PacslabelError` whose status code the STOW route answers with
    (422 Unprocessable Content: the body was well-formed DICOM but breaks our geometry/protocol rules).
    """

    status_code = 422

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason, status_code)
        self.reason = reason
