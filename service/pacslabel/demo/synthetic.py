"""Synthetic, PHI-laden DICOM studies: the shared test and demo data of pacslabel.

``generate_demo_studies`` writes Part-10 files for four fictional patients (CT and MR series with consistent
geometry, lesions to annotate, a Secondary Capture with burned-in identifiers, one patient with two studies on
different days) and ``manifest.json``, which lists every planted identifier, UID and date so that leak tests
can prove de-identification removed them, and the lesions and text boxes as ground truth.

Everything is a function of ``seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from tqdm import tqdm

from pacslabel.demo.burned_in import Corner, overlay_text, render_screen_capture, window_to_uint8
from pacslabel.demo.datasets import (
    SOP_CLASS_BY_MODALITY,
    StudyUids,
    add_ct_image_module,
    add_image_common,
    add_mr_image_module,
    add_plane_and_pixel_template,
    add_sop_common,
    age_string,
    base_dataset,
    ct_pixels,
    file_meta,
    later_time,
    mr_pixels,
)
from pacslabel.demo.geometry import StackGeometry, Vec3
from pacslabel.demo.phantoms import (
    TISSUES,
    PhantomRenderer,
    Shape,
    body_shapes,
    head_shapes,
    lesion_center,
    lesion_shape,
)
from pacslabel.demo.phi import PhiLedger
from pacslabel.demo.plan import AXIAL, STUDIES, Scale, SeriesSpec, StudySpec
from pacslabel.demo.uids import IMPLEMENTATION_CLASS_UID, derive_uid

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SC_SERIES_KEY = "series99"


@dataclass(frozen=True)
class DemoInstance:
    path: Path
    relative_path: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    instance_number: int
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str


@dataclass
class DemoSeries:
    key: str
    series_instance_uid: str
    series_number: int
    modality: str
    description: str
    frame_of_reference_uid: str | None
    geometry: StackGeometry | None
    instances: list[DemoInstance] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [instance.path for instance in self.instances]


@dataclass
class DemoStudy:
    key: str
    study_instance_uid: str
    study_date: str
    accession_number: str
    description: str
    patient_age: str
    series: list[DemoSeries] = field(default_factory=list)


@dataclass
class DemoPatient:
    key: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    weight_kg: float
    size_m: float
    studies: list[DemoStudy] = field(default_factory=list)


@dataclass(frozen=True)
class DemoLesion:
    """A planted lesion as seen by one series; ``lesion_id`` is stable across one patient's studies."""

    lesion_id: str
    label: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    center_mm: Vec3
    radii_mm: Vec3  # semi-axes along patient x, y, z
    expected_value: float  # HU for CT (after rescale), stored value for MR; before noise (sigma 10 / 20)
    intersecting_instance_numbers: list[int]


@dataclass(frozen=True)
class BurnedInText:
    relative_path: str
    sop_instance_uid: str
    kind: str
    text: str
    box: tuple[int, int, int, int]  # [left, top, right, bottom) in pixels; x = column, y = row


@dataclass
class DemoSet:
    outdir: Path
    seed: int
    scale: Scale
    files: list[Path]
    manifest_path: Path
    patients: list[DemoPatient]
    instances: list[DemoInstance]
    lesions: list[DemoLesion]
    burned_in_text: list[BurnedInText]
    phi: dict[str, Any]  # the ledger part of the manifest: phi_strings, phi_by_kind, uids, dates, times ...

    def instances_of(self, modality: str) -> list[DemoInstance]:
        return [instance for instance in self.instances if instance.modality == modality]

    def series(self) -> list[DemoSeries]:
        return [series for patient in self.patients for study in patient.studies for series in study.series]


def count_instances(scale: Scale, studies: Sequence[StudySpec] = STUDIES) -> int:
    """Number of files written for ``studies`` at ``scale`` (for progress bars and tests)."""
    slices = sum(s.geometry(scale, (0.0, 0.0, 0.0)).slices for study in studies for s in study.series)
    return slices + sum(1 for study in studies if study.secondary_capture)


def generate_demo_studies(
    outdir: Path, *, seed: int = 7, scale: Literal["full", "small"] = "full", progress: bool = False
) -> DemoSet:
    """Write the demo studies under ``outdir/<patient>/<study>/<series>/<NNNN>.dcm`` plus ``manifest.json``."""
    return write_studies(outdir, STUDIES, seed=seed, scale=scale, progress=progress)


def write_studies(
    outdir: Path, studies: Sequence[StudySpec], *, seed: int, scale: Scale, progress: bool = False
) -> DemoSet:
    """Write some of the planned studies (``plan.STUDIES``) with their own manifest.

    Files and UIDs are the same as in the full demo set for the same seed; tests use it to get a few
    full-size series without paying for all of them.
    """
    if scale not in ("full", "small"):
        raise ValueError(f"scale must be 'full' or 'small', not {scale!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    writer = _StudyWriter(outdir=outdir, seed=seed, scale=scale, ledger=PhiLedger())
    with tqdm(total=count_instances(scale, studies), disable=not progress, unit="file", desc="demo studies") as bar:
        writer.bar = bar
        for study in studies:
            writer.write_study(study)
    manifest_path = outdir / MANIFEST_NAME
    demo = DemoSet(
        outdir=outdir,
        seed=seed,
        scale=scale,
        files=[instance.path for instance in writer.instances],
        manifest_path=manifest_path,
        patients=list(writer.patients.values()),
        instances=writer.instances,
        lesions=writer.lesions,
        burned_in_text=writer.burned_in_text,
        phi=writer.ledger.to_manifest(),
    )
    manifest_path.write_text(json.dumps(build_manifest(demo), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return demo


def _stable_int(*names: str | int) -> int:
    """A seed-independent integer for naming a noise stream (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, names)).encode()).digest()[:8], "big")


def _shapes(study: StudySpec) -> list[Shape]:
    anatomy = body_shapes(study.center_mm) if study.anatomy == "body" else head_shapes(study.center_mm)
    return anatomy + [lesion_shape(study.center_mm, lesion) for lesion in study.lesions]


@dataclass
class _StudyWriter:
    """Writes studies one after the other and accumulates what the manifest needs."""

    outdir: Path
    seed: int
    scale: Scale
    ledger: PhiLedger
    bar: tqdm | None = None
    patients: dict[str, DemoPatient] = field(default_factory=dict)
    instances: list[DemoInstance] = field(default_factory=list)
    lesions: list[DemoLesion] = field(default_factory=list)
    burned_in_text: list[BurnedInText] = field(default_factory=list)

    def write_study(self, study: StudySpec) -> None:
        patient = study.patient
        demo_patient = self.patients.setdefault(
            patient.key,
            DemoPatient(
                patient.key,
                patient.patient_id,
                patient.name,
                patient.birth_date,
                patient.sex,
                patient.weight_kg,
                patient.size_m,
            ),
        )
        uids = StudyUids.derive(self.seed, study)
        age = age_string(patient.birth_date, study.date)
        demo_study = DemoStudy(study.key, uids.study, study.date, study.accession, study.description, age)
        demo_patient.studies.append(demo_study)
        shapes = _shapes(study)
        for spec in study.series:
            demo_series = self._write_image_series(study, uids, spec, shapes)
            demo_study.series.append(demo_series)
            self._record_lesions(study, demo_series)
        if study.secondary_capture:
            demo_study.series.append(self._write_screen_capture(study, uids, shapes))

    def _series_uid(self, study: StudySpec, series_key: str) -> str:
        return derive_uid(self.seed, "series", study.patient.key, study.key, series_key)

    def _sop_uid(self, study: StudySpec, series_key: str, number: int) -> str:
        return derive_uid(self.seed, "sop", study.patient.key, study.key, series_key, number)

    def _write_image_series(
        self, study: StudySpec, uids: StudyUids, spec: SeriesSpec, shapes: list[Shape]
    ) -> DemoSeries:
        geometry = spec.geometry(self.scale, study.center_mm)
        series_uid = self._series_uid(study, spec.key)
        # One dataset per series, mutated per slice: the shared modules are built (and ledgered) once.
        ds = base_dataset(study, uids, spec, series_uid, self.ledger)
        ds.FrameOfReferenceUID = self.ledger.uid(uids.frame_of_reference)
        ds.PositionReferenceIndicator = ""
        add_image_common(ds, study, spec.minutes_after_study, self.ledger, acquisition_number=1)
        add_plane_and_pixel_template(ds, geometry)
        if spec.modality == "CT":
            event_uid = derive_uid(self.seed, "irradiation", study.patient.key, study.key, spec.key)
            add_ct_image_module(ds, event_uid, self.ledger)
        else:
            add_mr_image_module(ds, spec, study.site)
        demo_series = DemoSeries(
            spec.key, series_uid, spec.number, spec.modality, spec.description, uids.frame_of_reference, geometry
        )
        rng = np.random.default_rng([self.seed, _stable_int(study.patient.key, study.key, spec.key)])
        renderer = PhantomRenderer(shapes, geometry, rng)
        for index in range(geometry.slices):
            values = renderer.render(index, spec.contrast)
            ds.InstanceNumber = index + 1
            ds.ImagePositionPatient = geometry.position_ds(index)
            ds.SliceLocation = geometry.slice_location(index)
            # Slices are reconstructed a quarter second apart, as a scanner stamps them.
            ds.ContentTime = self.ledger.time(later_time(study.time, spec.minutes_after_study, 0.25 * index))
            ds.PixelData = ct_pixels(values) if spec.modality == "CT" else mr_pixels(values)
            ds["PixelData"].VR = "OW"
            demo_series.instances.append(self._save(ds, study, spec.key, spec.modality, index + 1))
        return demo_series

    def _save(self, ds: Dataset, study: StudySpec, series_key: str, modality: str, number: int) -> DemoInstance:
        sop_class = SOP_CLASS_BY_MODALITY[modality]
        sop_uid = self.ledger.uid(self._sop_uid(study, series_key, number))
        add_sop_common(ds, sop_class, sop_uid)
        ds.file_meta = file_meta(sop_class, sop_uid)
        relative = f"{study.patient.key}/{study.key}/{series_key}/{number:04d}.dcm"
        path = self.outdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        instance = DemoInstance(
            path=path,
            relative_path=relative,
            sop_class_uid=str(sop_class),
            sop_instance_uid=sop_uid,
            modality=modality,
            instance_number=number,
            patient_id=study.patient.patient_id,
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
        )
        self.instances.append(instance)
        if self.bar is not None:
            self.bar.update(1)
        return instance

    def _record_lesions(self, study: StudySpec, series: DemoSeries) -> None:
        assert series.geometry is not None
        contrast = next(s.contrast for s in study.series if s.key == series.key)
        for lesion in study.lesions:
            center = lesion_center(study.center_mm, lesion)
            slices = series.geometry.intersecting_slices(center, lesion.radii_mm)
            self.lesions.append(
                DemoLesion(
                    lesion_id=lesion.lesion_id,
                    label=lesion.label,
                    patient_id=study.patient.patient_id,
                    study_instance_uid=series.instances[0].study_instance_uid,
                    series_instance_uid=series.series_instance_uid,
                    modality=series.modality,
                    center_mm=center,
                    radii_mm=lesion.radii_mm,
                    expected_value=float(TISSUES[lesion.tissue][contrast]),
                    intersecting_instance_numbers=[k + 1 for k in slices],
                )
            )

    def _write_screen_capture(self, study: StudySpec, uids: StudyUids, shapes: list[Shape]) -> DemoSeries:
        """A workstation screenshot of the first lesion's axial plane, identifiers burned into the corners."""
        ledger = self.ledger
        patient = study.patient
        lesion_z = lesion_center(study.center_mm, study.lesions[0])[2]
        anatomy = _axial_snapshot(shapes, (study.center_mm[0], study.center_mm[1], lesion_z), self.seed)
        family, given, *middle = patient.name.split("^")
        texts: list[tuple[Corner, str, str]] = [
            ("top_left", "patient_name", overlay_text(f"{family}, {' '.join([given, *middle])}")),
            ("top_left", "patient_id", f"MRN {patient.patient_id}"),
            ("top_right", "birth_date", f"DOB {ledger.date_text(patient.birth_date, '%d.%m.%Y')}"),
            (
                "top_right",
                "study_date",
                f"{ledger.date_text(study.date, '%d.%m.%Y')} {study.time[:2]}:{study.time[2:4]}",
            ),
            ("bottom_left", "institution", overlay_text(study.site.institution)),
            ("bottom_right", "accession_number", f"ACC {study.accession}"),
        ]
        pixels, boxes = render_screen_capture(anatomy, texts)
        series_uid = self._series_uid(study, SC_SERIES_KEY)
        ds = base_dataset(study, uids, None, series_uid, ledger)
        add_image_common(ds, study, 30, ledger, acquisition_number=1)
        _add_screen_capture_modules(ds, study, pixels, ledger)
        ds.SourceImageSequence = [self._source_reference(study, lesion_z)]
        demo_series = DemoSeries(SC_SERIES_KEY, series_uid, 99, "OT", "Screen capture", None, None)
        instance = self._save(ds, study, SC_SERIES_KEY, "OT", 1)
        demo_series.instances.append(instance)
        for box in boxes:
            ledger.value("burned_in_text", box.text)
            self.burned_in_text.append(
                BurnedInText(instance.relative_path, instance.sop_instance_uid, box.kind, box.text, box.box)
            )
        return demo_series

    def _source_reference(self, study: StudySpec, z_mm: float) -> Dataset:
        """The CT slice closest to the captured plane (de-identification must remap this UID too)."""
        spec = study.series[0]
        geometry = spec.geometry(self.scale, study.center_mm)
        index = int(np.clip(round((z_mm - geometry.position(0)[2]) / geometry.slice_spacing), 0, geometry.slices - 1))
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = self.ledger.uid(self._sop_uid(study, spec.key, index + 1))
        return item


def _axial_snapshot(shapes: list[Shape], center: Vec3, seed: int) -> np.ndarray:
    size = 384
    geometry = StackGeometry(
        rows=size,
        columns=size,
        slices=1,
        row_direction=AXIAL[0],
        column_direction=AXIAL[1],
        pixel_spacing=(400.0 / size, 400.0 / size),
        slice_spacing=1.0,
        slice_thickness=1.0,
        center_mm=center,
    )
    rng = np.random.default_rng([seed, _stable_int("screen-capture")])
    return window_to_uint8(PhantomRenderer(shapes, geometry, rng).render(0, "CT"))


def _add_screen_capture_modules(ds: Dataset, study: StudySpec, pixels: np.ndarray, ledger: PhiLedger) -> None:
    """SC Equipment, General Image, SC Image and Image Pixel for an 8-bit greyscale screenshot."""
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = "pacslabel"
    ds.SecondaryCaptureDeviceManufacturerModelName = "demo generator"
    ds.SecondaryCaptureDeviceSoftwareVersions = "1"
    ds.DateOfSecondaryCapture = ledger.date(study.date)
    ds.TimeOfSecondaryCapture = ledger.time(later_time(study.time, 31))
    ds.ContentTime = ledger.time(later_time(study.time, 31))
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = "Screen capture of the axial CT with patient overlay"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"


def build_manifest(demo: DemoSet) -> dict[str, Any]:
    """The JSON manifest: planted PHI, UIDs and dates first (for leak tests), then structure and ground truth."""
    return {
        "format": "pacslabel-demo-manifest",
        "version": MANIFEST_VERSION,
        "seed": demo.seed,
        "scale": demo.scale,
        # The writer's ImplementationClassUID: the same for every seed and not patient data, so not in "uids".
        "implementation_class_uid": IMPLEMENTATION_CLASS_UID,
        **demo.phi,
        "patients": [_patient_entry(patient) for patient in demo.patients],
        "files": [_instance_entry(instance) for instance in demo.instances],
        "lesions": [
            {
                "lesion_id": lesion.lesion_id,
                "label": lesion.label,
                "patient_id": lesion.patient_id,
                "study_instance_uid": lesion.study_instance_uid,
                "series_instance_uid": lesion.series_instance_uid,
                "modality": lesion.modality,
                "shape": "ellipsoid",
                "center_mm": list(lesion.center_mm),
                "radii_mm": list(lesion.radii_mm),
                "expected_value": lesion.expected_value,
                "intersecting_instance_numbers": lesion.intersecting_instance_numbers,
            }
            for lesion in demo.lesions
        ],
        "burned_in_text": [
            {
                "path": text.relative_path,
                "sop_instance_uid": text.sop_instance_uid,
                "kind": text.kind,
                "text": text.text,
                "box": list(text.box),
            }
            for text in demo.burned_in_text
        ],
    }


def _instance_entry(instance: DemoInstance) -> dict[str, Any]:
    return {
        "path": instance.relative_path,
        "sop_class_uid": instance.sop_class_uid,
        "sop_instance_uid": instance.sop_instance_uid,
        "modality": instance.modality,
        "instance_number": instance.instance_number,
        "patient_id": instance.patient_id,
        "study_instance_uid": instance.study_instance_uid,
        "series_instance_uid": instance.series_instance_uid,
    }


def _patient_entry(patient: DemoPatient) -> dict[str, Any]:
    return {
        "key": patient.key,
        "patient_id": patient.patient_id,
        "patient_name": patient.patient_name,
        "birth_date": patient.birth_date,
        # Not in phi_strings (too short to search for as substrings) but identifying in combination.
        "sex": patient.sex,
        "weight_kg": patient.weight_kg,
        "size_m": patient.size_m,
        "studies": [
            {
                "key": study.key,
                "study_instance_uid": study.study_instance_uid,
                "study_date": study.study_date,
                "accession_number": study.accession_number,
                "description": study.description,
                "patient_age": study.patient_age,
                "series": [_series_entry(series) for series in study.series],
            }
            for study in patient.studies
        ],
    }


def _series_entry(series: DemoSeries) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "key": series.key,
        "series_instance_uid": series.series_instance_uid,
        "series_number": series.series_number,
        "modality": series.modality,
        "description": series.description,
        "frame_of_reference_uid": series.frame_of_reference_uid,
        "files": [instance.relative_path for instance in series.instances],
    }
    if series.geometry is not None:
        g = series.geometry
        entry["geometry"] = {
            "rows": g.rows,
            "columns": g.columns,
            "slices": g.slices,
            "image_orientation_patient": g.orientation,
            "pixel_spacing": list(g.pixel_spacing),
            "spacing_between_slices": g.slice_spacing,
            "slice_thickness": g.slice_thickness,
            "first_image_position_patient": [float(v) for v in g.position(0)],
        }
    return entry


__all__ = [
    "BurnedInText",
    "DemoInstance",
    "DemoLesion",
    "DemoPatient",
    "DemoSeries",
    "DemoSet",
    "DemoStudy",
    "count_instances",
    "generate_demo_studies",
    "write_studies",
]
