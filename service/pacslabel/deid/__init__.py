"""De-identification engine: PS3.15 Annex E Table E.1-1 (2024b) with per-project options and keyed pseudonyms.

Use one :class:`Deidentifier` per project (key + :class:`DeidOptions`) and call ``deidentify_bytes`` on
received instances, then ``apply_burned_in_policy`` (OCR of burned-in text, for instances at risk) on the
result. These names are the room's public surface; the ingest worker uses nothing else.
"""

from pacslabel.deid.catalog_fields import DeidentifiedInstance
from pacslabel.deid.engine import Deidentifier
from pacslabel.deid.errors import DeidentificationError
from pacslabel.deid.method_record import add_deidentification_method_code
from pacslabel.deid.options import DeidOptions
from pacslabel.deid.pixel_policy import (
    BURNED_IN_POLICIES,
    DEFAULT_BURNED_IN_POLICY,
    BurnedInPolicy,
    apply_burned_in_policy,
)

__all__ = [
    "BURNED_IN_POLICIES",
    "DEFAULT_BURNED_IN_POLICY",
    "BurnedInPolicy",
    "apply_burned_in_policy",
    "DeidOptions",
    "DeidentificationError",
    "DeidentifiedInstance",
    "Deidentifier",
    "add_deidentification_method_code",
]
