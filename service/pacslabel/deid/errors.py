"""The one error the de-identification engine raises."""

from __future__ import annotations


class DeidentificationError(Exception):
    """An instance cannot be de-identified safely; it goes to quarantine.

    The message is a PHI-free reason (it is logged and shown to administrators): it may name tags,
    transfer syntaxes and sizes, never attribute values.
    """
