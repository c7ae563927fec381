"""The burned-in text policy, applied by the ingest worker to the de-identified instance before it is forwarded.

The header engine (`Deidentifier.deidentify_bytes`) does not touch pixels; this applies the route's policy
(`clean` by default, `quarantine`, or `off`) with `pacslabel.deid.burned_in_text` to instances at risk, records
Clean Pixel Data (113101) when pixels changed, and re-encodes. Instances not at risk cost one lazy header parse
(pixel data is not read).
"""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO
from typing import Literal

from pydicom import dcmread

from pacslabel.deid.burned_in_text import clean_burned_in_text, is_at_risk
from pacslabel.deid.catalog_fields import DeidentifiedInstance, catalog_attributes
from pacslabel.deid.method_record import add_deidentification_method_code
from pacslabel.deid.options import CLEAN_PIXEL_DATA
from pacslabel.deid.part10 import transfer_syntax_of, write_part10

BurnedInPolicy = Literal["clean", "quarantine", "off"]
BURNED_IN_POLICIES: tuple[BurnedInPolicy, ...] = ("clean", "quarantine", "off")
DEFAULT_BURNED_IN_POLICY: BurnedInPolicy = "clean"
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}


def _may_need_pixels(ds: object) -> bool:
    from pydicom import Dataset

    assert isinstance(ds, Dataset)
    if "PixelData" not in ds:
        return False
    if is_at_risk(ds):
        return True
    # Overlay bits embedded above Bits Stored are cleared on every instance (policy clean/quarantine).
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", allocated) or allocated)
    return str(transfer_syntax_of(ds)) in _NATIVE and stored < allocated


def apply_burned_in_policy(deid: DeidentifiedInstance, policy: BurnedInPolicy) -> DeidentifiedInstance:
    """Return `deid` unchanged, or cleaned and re-encoded; raises BurnedInTextError (→ quarantine)."""
    if policy == "off":
        return deid
    buffer = BytesIO(deid.data)
    ds = dcmread(buffer, defer_size=4096)  # large values (pixels) are read only if needed
    if not _may_need_pixels(ds):
        return deid
    result = clean_burned_in_text(ds, policy)
    if not result.cleaned:
        return deid
    add_deidentification_method_code(ds, CLEAN_PIXEL_DATA)
    data = write_part10(ds, transfer_syntax_of(ds))
    return replace(deid, data=data, attributes=catalog_attributes(ds))
