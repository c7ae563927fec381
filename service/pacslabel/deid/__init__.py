"""De-identification engine: PS3.15 Annex E Table E.1-1 (2024b) with per-project options and keyed pseudonyms.

Use one :class:`Deidentifier` per project (key + :class:`DeidOptions`) and call ``deidentify_bytes`` on
received instances. The pixel step (``burned_in_text``) records its work with
:func:`add_deidentification_method_code`.
"""

from pacslabel.deid.catalog_fields import DeidentifiedInstance
from pacslabel.deid.engine import Deidentifier
from pacslabel.deid.errors import DeidentificationError
from pacslabel.deid.method_record import add_deidentification_method_code
from pacslabel.deid.options import DeidOptions

__all__ = [
    "DeidOptions",
    "DeidentificationError",
    "DeidentifiedInstance",
    "Deidentifier",
    "add_deidentification_method_code",
]
