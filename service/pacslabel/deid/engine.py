"""The de-identification walker: one pass over a dataset, every sequence level, driven by Table E.1-1.

Design notes (why it looks like this):
- The action map is a precomputed ``dict[tag, action]`` per option set, with compound codes resolved once
  per SOP class; the walk is one dictionary lookup per element.
- Elements that need nothing stay as pydicom ``RawDataElement`` and are written back byte for byte, so
  Pixel Data and most of the header are never decoded.
- Three walking modes: NORMAL; CLEAN (inside a sequence the options say to clean: free text is cleaned);
  DUMMY (inside a sequence whose action is D: every free-text leaf becomes a dummy, coded concepts stay).
- Outside the table, standard attributes are kept (PS3.15 lists the identifying ones) except: every UI
  value is remapped, DA/DT follow the date policy and PN values are replaced — names and dates are never
  safe, wherever a vendor or a newer edition put them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

import pacslabel
from pacslabel.deid import element_values as ev
from pacslabel.deid import profile_table as pt
from pacslabel.deid.catalog_fields import DeidentifiedInstance, catalog_attributes
from pacslabel.deid.date_shifting import (
    EARLIEST_OFFSET_DAYS,
    LATEST_OFFSET_DAYS,
    shift_range_or_value,
)
from pacslabel.deid.descriptor_cleaning import TERM_SOURCE_TAGS, DescriptorCleaner, collect_sensitive_terms
from pacslabel.deid.errors import DeidentificationError
from pacslabel.deid.iod_types import nested_type, resolve_compound, resolved_top_level
from pacslabel.deid.method_record import record_deidentification
from pacslabel.deid.options import DeidOptions
from pacslabel.deid.part10 import check_transfer_syntax, read_dataset, write_part10
from pacslabel.deid.pseudonyms import Pseudonymizer
from pacslabel.deid.replacement_values import TEXT_VRS, age_bracket, dummy_value
from pacslabel.deid.uid_remapping import CLASS_UID_TAGS, UidRemapper, keyed_uid

logger = logging.getLogger(__name__)

NORMAL, CLEAN, DUMMY = 0, 1, 2

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PATIENT_AGE = 0x00101010
ACCESSION_NUMBER = 0x00080050
STUDY_ID = 0x00200010
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
PATIENT_BIRTH_DATE = 0x00100030
_PSEUDONYMISED_TAGS = frozenset({PATIENT_ID, PATIENT_NAME, ACCESSION_NUMBER, STUDY_ID})
# Not in Table E.1-1 but they carry instance UIDs inside text (WADO URLs): removed.
EXTRA_REMOVALS = frozenset({0x00081190, 0x0040E010, 0x00404072, 0x00404073})
# Coded concepts inside D sequences are vocabulary, not identity: kept so SR trees stay meaningful.
CODE_SEQUENCES = frozenset({0x0040A043, 0x0040A168, 0x004008EA, 0x0040A170, 0x00089215})
_DATE_VRS = frozenset({"DA", "DT"})
_DUMMY_MODE_VRS = TEXT_VRS | {"AE", "AS", "UR", "PN"}
_CLEANING_ACTIONS = frozenset(
    {pt.CLEAN_DESCRIPTOR, pt.CLEAN_PATIENT_CHARACTERISTIC, pt.CLEAN_GRAPHICS, pt.CLEAN_STRUCTURED}
)

# Where Clean Descriptors takes its terms from: every standard PN attribute plus the identifier/place tags.
_PN_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "PN")
_TERM_SOURCE_TAGS = _PN_TAGS | frozenset(TERM_SOURCE_TAGS)
_CLEANER_CACHE_SIZE = 64

IMPLEMENTATION_CLASS_UID = keyed_uid(b"pacslabel", "implementation-class")
IMPLEMENTATION_VERSION_NAME = f"PACSLABEL_{pacslabel.__version__}"[:16]


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


@dataclass
class _InstanceState:
    """Per-instance values the walk needs (computed once from the original header)."""

    remap: Callable[[str], str]
    date_offset: int
    pseudo_patient_id: str
    cleaner: DescriptorCleaner | None


class Deidentifier:
    """De-identifies datasets with one key and one option set (create one per project and reuse it)."""

    def __init__(self, key: bytes, options: DeidOptions = DeidOptions()) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise ValueError("The pseudonym key must be at least 16 bytes.")
        self.options = options
        self._uids = UidRemapper(bytes(key))
        self.pseudonyms = Pseudonymizer(bytes(key))
        action_map = pt.build_action_map(options)
        self._by_group = action_map.by_group
        self._private_action = action_map.private
        simple = {t: a for t, a in action_map.by_tag.items() if a not in pt.COMPOUND_CODES}
        self._compound = tuple(sorted((t, a) for t, a in action_map.by_tag.items() if a in pt.COMPOUND_CODES))
        self._simple = simple
        self._compound_codes = dict(self._compound)
        # Inside sequences compound codes are resolved per (sequence, attribute) as they are met.
        self._nested = simple
        self._basic_dummy_tags = pt.basic_dummy_tags()
        self._top_by_sop_class: dict[str, dict[int, str]] = {}
        self._cleaners: dict[tuple[Any, ...], DescriptorCleaner] = {}
        if options.shifts_dates:
            self._date_policy = "shift"
        elif options.retain_longitudinal_full_dates:
            self._date_policy = "keep"
        else:
            self._date_policy = "remove"
        self._needs_cleaner = options.clean_descriptors or options.clean_graphics or options.clean_structured_content

    # -- public API ----------------------------------------------------------------------------------

    def remap_uid(self, uid: str) -> str:
        """The pseudonymous UID for an original UID (identity under Retain UIDs and for class UIDs)."""
        if self.options.retain_uids:
            return uid
        return self._uids.remap(uid)

    def deidentify_bytes(self, raw: bytes) -> DeidentifiedInstance:
        """Parse Part-10 bytes (or a bare dataset), de-identify, and write Part-10 bytes.

        Raises :class:`DeidentificationError` with a PHI-free reason for anything that cannot be
        de-identified safely; the caller quarantines the input.
        """
        ds = read_dataset(raw)
        syntax = check_transfer_syntax(ds)
        original_key = self.original_patient_identity(ds)
        try:
            self.deidentify_dataset(ds)
        except DeidentificationError:
            raise
        except Exception as exc:  # a malformed element met while walking: quarantine, do not guess
            raise DeidentificationError(f"the dataset could not be walked ({type(exc).__name__})") from None
        data = write_part10(ds, syntax)
        return DeidentifiedInstance(
            data=data,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            patient_id=str(ds.get("PatientID", "")),
            original_patient_key=self.pseudonyms.patient_key(original_key),
            attributes=catalog_attributes(ds),
        )

    def patient_pseudonym(self, original_patient_id: str) -> str:
        return self.pseudonyms.patient_id(original_patient_id)

    def deidentify_dataset(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (file meta rebuilt) and return it."""
        sop_class = str(ds.get(SOP_CLASS_UID).value if SOP_CLASS_UID in ds else "").strip()
        if not sop_class:
            raise DeidentificationError("SOP Class UID (0008,0016) is missing or empty")
        if SOP_INSTANCE_UID not in ds or not str(ds[SOP_INSTANCE_UID].value or "").strip():
            raise DeidentificationError("SOP Instance UID (0008,0018) is missing or empty")
        original_key = self.original_patient_identity(ds)
        state = _InstanceState(
            remap=self.remap_uid,
            date_offset=self.pseudonyms.date_offset_days(original_key, EARLIEST_OFFSET_DAYS, LATEST_OFFSET_DAYS),
            pseudo_patient_id=self.pseudonyms.patient_id(original_key),
            cleaner=self._cleaner_for(ds) if self._needs_cleaner else None,
        )
        self._walk(ds, self._top_level_actions(sop_class), state, NORMAL, None)
        if PATIENT_ID not in ds:  # Type 2 in every IOD; also what the catalog groups by
            ev.set_text(ds, PATIENT_ID, "LO", state.pseudo_patient_id)
        if PATIENT_NAME not in ds:
            ev.set_text(ds, PATIENT_NAME, "PN", state.pseudo_patient_id + "^")
        record_deidentification(ds, self.options)
        self._rebuild_file_meta(ds, sop_class)
        return ds

    def original_patient_identity(self, ds: Dataset) -> str:
        """The string the patient pseudonyms and the date offset derive from.

        PatientID when present; otherwise name + birth date; otherwise the Study Instance UID (so that
        unidentified studies are not all merged into one pseudonymous patient).
        """
        pid = str(ds[PATIENT_ID].value or "").strip() if PATIENT_ID in ds else ""
        if pid:
            return pid
        name = str(ds[PATIENT_NAME].value or "").strip() if PATIENT_NAME in ds else ""
        birth = str(ds[PATIENT_BIRTH_DATE].value or "").strip() if PATIENT_BIRTH_DATE in ds else ""
        if name:
            return f"name:{name}|{birth}"
        study = str(ds[STUDY_INSTANCE_UID].value or "").strip() if STUDY_INSTANCE_UID in ds else ""
        return f"study:{study}"

    # -- set-up per instance -------------------------------------------------------------------------

    def _top_level_actions(self, sop_class: str) -> dict[int, str]:
        actions = self._top_by_sop_class.get(sop_class)
        if actions is None:
            actions = {**self._simple, **resolved_top_level(sop_class, self._compound)}
            if len(self._top_by_sop_class) < 1024:  # bounded: SOP classes come from the network
                self._top_by_sop_class[sop_class] = actions
        return actions

    def _cleaner_for(self, ds: Dataset) -> DescriptorCleaner:
        """The cleaner for this header; cached by the raw source values (a series shares them)."""
        key = []
        for tag in ds.keys():
            if tag in _TERM_SOURCE_TAGS:
                elem = ds.get_item(tag)
                value = elem.value if elem is not None else None
                if isinstance(value, bytes | str):
                    key.append((int(tag), value))
                elif isinstance(value, Sequence):  # Other Patient IDs Sequence
                    key.append((int(tag), tuple(str(item.get("PatientID", "")) for item in value)))
                else:
                    key.append((int(tag), str(value)))
        cache_key = (tuple(key), str(ds.get("SpecificCharacterSet", "")))
        cleaner = self._cleaners.get(cache_key)
        if cleaner is None:
            names = []
            for tag in ds.keys():
                if tag in _PN_TAGS:
                    value = ds[tag].value
                    values = value if isinstance(value, MultiValue | list) else [value]
                    names.extend(str(v) for v in values if v)
            terms = collect_sensitive_terms(
                ds,
                names,
                include_institution=not self.options.retain_institution_identity,
                include_device=not self.options.retain_device_identity,
            )
            cleaner = DescriptorCleaner(terms)
            if len(self._cleaners) >= _CLEANER_CACHE_SIZE:  # small: it holds header values of recent studies
                self._cleaners.clear()
            self._cleaners[cache_key] = cleaner
        return cleaner

    # -- the walk ------------------------------------------------------------------------------------

    def _walk(
        self, ds: Dataset, actions: dict[int, str], state: _InstanceState, mode: int, parent_sq: int | None
    ) -> None:
        private_tags: list[int] = []
        for tag in list(ds.keys()):
            key = int(tag)  # plain int for dict/set lookups: BaseTag.__eq__ is a Python-level call
            group = key >> 16
            if group & 1:
                private_tags.append(tag)
                continue
            if group == 0x0002:
                del ds[tag]  # file meta inside the dataset body is invalid; the meta is rebuilt
                continue
            action = actions.get(key)
            if action == pt.REMOVE and key != PATIENT_ID:
                del ds[tag]  # the commonest action: no need to look at the element
                continue
            if action is None:
                if group in self._by_group or key in EXTRA_REMOVALS:
                    del ds[tag]
                    continue
                if parent_sq is not None and key in self._compound_codes:
                    action = self._nested_compound(parent_sq, key)
            elem = ds.get_item(tag)
            if elem is None:
                continue
            vr = elem.VR or _dictionary_vr(key)
            if action is None:
                self._unlisted(ds, tag, vr, state, mode)
            else:
                self._apply(ds, tag, vr, action, state, mode)
        if private_tags:
            self._private(ds, private_tags, state, mode)

    def _nested_compound(self, parent_sq: int, tag: int) -> str:
        known = nested_type(parent_sq, tag)
        return resolve_compound(self._compound_codes[tag], known, nested=True)

    def _recurse(self, ds: Dataset, tag: int, state: _InstanceState, mode: int) -> None:
        original = ds.get_item(tag)
        was_raw = isinstance(original, RawDataElement)
        items = ds[tag].value or []
        changed = False
        for item in items:
            before = {t: id(item.get_item(t)) for t in item.keys()} if was_raw else None
            self._walk(item, self._nested, state, mode, tag)
            if before is None or before != {t: id(item.get_item(t)) for t in item.keys()}:
                changed = True
        if was_raw and not changed:
            # Nothing in the items needed a change: put the original bytes back so that the writer
            # copies them instead of re-encoding every item (a large share of write time).
            ds[tag] = original

    def _unlisted(self, ds: Dataset, tag: int, vr: str, state: _InstanceState, mode: int) -> None:
        """An attribute Table E.1-1 does not list."""
        if vr == "SQ":
            self._recurse(ds, tag, state, NORMAL if mode == DUMMY and tag in CODE_SEQUENCES else mode)
        elif vr == "UI":
            if tag not in CLASS_UID_TAGS:
                self._remap(ds, tag, state)
        elif vr in _DATE_VRS:
            self._dates(ds, tag, vr, state)
        elif vr == "PN":
            if not ev.is_empty(ds, tag):
                ev.set_text(ds, tag, "PN", dummy_value("PN"))
        elif mode == CLEAN and vr in TEXT_VRS:
            self._clean_text(ds, tag, state, required=False)
        elif mode == DUMMY and vr in _DUMMY_MODE_VRS:
            if not ev.is_empty(ds, tag):
                ev.set_value(ds, tag, vr, dummy_value(vr))

    def _apply(self, ds: Dataset, tag: int, vr: str, action: str, state: _InstanceState, mode: int) -> None:
        if int(tag) in _PSEUDONYMISED_TAGS:
            if self._pseudonymize(ds, tag, state):
                return
        if action == pt.REMOVE:
            del ds[tag]
        elif action == pt.EMPTY:
            ev.set_empty(ds, tag, vr)
        elif action == pt.DUMMY or action == pt.REPLACE_UID:
            if vr == "SQ":
                self._recurse(ds, tag, state, DUMMY if action == pt.DUMMY else mode)
            elif vr == "UI":
                self._remap(ds, tag, state, required=True)
            else:
                ev.set_value(ds, tag, vr, dummy_value(vr))
        elif action == pt.KEEP:
            if vr == "SQ":
                self._recurse(ds, tag, state, mode)
            elif vr == "UI" and tag not in CLASS_UID_TAGS:
                self._remap(ds, tag, state)
            elif tag == PATIENT_AGE:
                self._age(ds, tag)
        elif action == pt.CLEAN_DATES:
            if vr in _DATE_VRS:
                self._dates(ds, tag, vr, state)
            elif vr == "SQ":
                self._recurse(ds, tag, state, mode)
        elif action in _CLEANING_ACTIONS:
            if vr == "SQ":
                self._recurse(ds, tag, state, CLEAN)
            elif vr in TEXT_VRS:
                self._clean_text(ds, tag, state, required=tag in self._basic_dummy_tags)
            elif vr == "PN":
                if not ev.is_empty(ds, tag):
                    ev.set_text(ds, tag, "PN", dummy_value("PN"))
            elif vr in _DATE_VRS:
                self._dates(ds, tag, vr, state)
            elif action == pt.CLEAN_GRAPHICS:
                del ds[tag]  # curves/overlay bitmaps cannot be cleaned here: removing is the safe "clean"
        elif action == pt.CLEAN_DEVICE:
            if not ev.is_empty(ds, tag):
                ev.set_value(ds, tag, vr, dummy_value(vr))
        else:  # an unexpected code from a future table edition: fail closed
            del ds[tag]

    # -- value handlers ------------------------------------------------------------------------------

    def _pseudonymize(self, ds: Dataset, tag: int, state: _InstanceState) -> bool:
        if tag == PATIENT_NAME:
            # Family-name form: a bare word reads as the retired ACR-NEMA name form to validators.
            ev.set_text(ds, tag, "PN", state.pseudo_patient_id + "^")
            return True
        value = str(ds[tag].value or "").strip()  # charset-aware decode: the pseudonym must not depend on it
        if tag == PATIENT_ID:
            new = self.pseudonyms.patient_id(value) if value else state.pseudo_patient_id
            ev.set_text(ds, tag, "LO", new)
            return True
        if not value:
            return False  # an empty accession / study ID stays empty (Type 2)
        if tag == ACCESSION_NUMBER:
            ev.set_text(ds, tag, "SH", self.pseudonyms.accession_number(value))
        else:
            ev.set_text(ds, tag, "SH", self.pseudonyms.study_id(value))
        return True

    def _remap(self, ds: Dataset, tag: int, state: _InstanceState, *, required: bool = False) -> None:
        values = ev.ascii_values(ds, tag)
        if values:
            ev.set_text(ds, tag, "UI", [state.remap(v) for v in values])
        elif required:
            ev.set_text(ds, tag, "UI", keyed_uid(b"pacslabel-dummy", f"{tag:08X}"))

    def _dates(self, ds: Dataset, tag: int, vr: str, state: _InstanceState) -> None:
        if self._date_policy == "keep":
            return
        if self._date_policy == "remove":
            ev.set_empty(ds, tag, vr)
            return
        values = ev.ascii_values(ds, tag)
        if not values:
            return
        shifted = [shift_range_or_value(v, state.date_offset, is_datetime=vr == "DT") for v in values]
        if any(s is None for s in shifted):
            ev.set_empty(ds, tag, vr)  # cannot shift what cannot be parsed: drop the value
        else:
            ev.set_text(ds, tag, vr, [s for s in shifted if s is not None])

    def _clean_text(self, ds: Dataset, tag: int, state: _InstanceState, *, required: bool) -> None:
        cleaner = state.cleaner
        if cleaner is None or ev.is_empty(ds, tag):
            return
        raw = ds.get_item(tag)
        raw_bytes = raw.value if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) else None
        if raw_bytes is not None:
            # The cleaner belongs to one header (character set included): same bytes, same result.
            done = cleaner.raw_results.get((raw_bytes, required))
            if done is not None:
                if done != raw_bytes:
                    ds[tag] = RawDataElement(tag, raw.VR, len(done), done, 0, raw.is_implicit_VR, True)
                return
        elem = ds[tag]  # charset-aware decode
        value = elem.value
        vr = elem.VR
        values = [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]
        cleaned = [cleaner.clean(v) for v in values]
        if required and not any(cleaned):
            cleaned = [dummy_value(vr)]
        if cleaned == values:
            if raw_bytes is not None:
                cleaner.remember_raw((raw_bytes, required), raw_bytes)
            return
        if all(c.isascii() for c in cleaned):
            ev.set_text(ds, tag, vr, cleaned)
            if raw_bytes is not None:
                cleaner.remember_raw((raw_bytes, required), ds.get_item(tag).value)
        else:
            elem.value = cleaned if len(cleaned) > 1 else cleaned[0]

    def _age(self, ds: Dataset, tag: int) -> None:
        values = ev.ascii_values(ds, tag)
        if values:
            bracket = age_bracket(values[0])
            if bracket:
                ev.set_text(ds, tag, "AS", bracket)
            else:
                ev.set_empty(ds, tag, "AS")

    def _private(self, ds: Dataset, tags: list[int], state: _InstanceState, mode: int) -> None:
        """All private elements go, except (creator, offset) pairs on the project's safe list."""
        safe = self.options.safe_private_tags if self._private_action == pt.CLEAN_PRIVATE else frozenset()
        kept_blocks: set[int] = set()
        creators: list[int] = []
        for tag in tags:
            element = tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF and safe:
                creators.append(tag)
                continue
            if safe and element >= 0x1000:
                creator_tag = (tag & 0xFFFF0000) | (element >> 8)
                creator = ds.get(creator_tag)
                name = str(creator.value).strip() if creator is not None and creator.value else ""
                if (name, element & 0xFF) in safe:
                    kept_blocks.add(creator_tag)
                    self._keep_safe_private(ds, tag, state, mode)
                    continue
            del ds[tag]
        for tag in creators:
            if tag not in kept_blocks:
                del ds[tag]

    def _keep_safe_private(self, ds: Dataset, tag: int, state: _InstanceState, mode: int) -> None:
        elem = ds.get_item(tag)
        vr = elem.VR if elem is not None else None
        if vr in ("SQ", "UI", "DA", "DT", "PN"):
            self._unlisted(ds, tag, vr, state, mode)

    # -- file meta -----------------------------------------------------------------------------------

    def _rebuild_file_meta(self, ds: Dataset, sop_class: str) -> None:
        """A fresh file meta: only the UIDs (new instance UID) and the transfer syntax survive.

        Source AE titles, private information and the sender's implementation identity are dropped.
        """
        old = getattr(ds, "file_meta", None)
        transfer_syntax = old.get("TransferSyntaxUID") if old is not None else None
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if transfer_syntax:
            meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        ds.file_meta = meta
