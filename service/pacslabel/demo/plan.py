"""What the demo set contains: the fictional patients, sites, studies and series.

All people, institutions and identifiers are invented. The values are fixed (not seeded) so that every scale
and every seed carries the same PHI; only UIDs and pixel noise depend on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pacslabel.demo.geometry import StackGeometry, Vec3
from pacslabel.demo.phantoms import Contrast, LesionSpec

Scale = Literal["full", "small"]


@dataclass(frozen=True)
class Site:
    manufacturer: str
    model: str
    software: str
    station: str
    serial: str
    institution: str
    address: str
    department: str
    performing_physician: str
    operators: tuple[str, ...]
    reading_physician: str
    field_strength_t: float | None = None  # MR scanners only


@dataclass(frozen=True)
class PatientSpec:
    key: str
    name: str
    patient_id: str
    issuer: str
    other_ids: tuple[tuple[str, str], ...]  # (id, issuer)
    birth_date: str
    sex: Literal["M", "F", "O"]
    weight_kg: float
    size_m: float
    address: str
    telephone: str


@dataclass(frozen=True)
class SeriesSpec:
    key: str
    number: int
    modality: Literal["CT", "MR"]
    contrast: Contrast
    description: str
    protocol: str
    row_direction: Vec3
    column_direction: Vec3
    full_shape: tuple[int, int, int]  # rows, columns, slices
    small_shape: tuple[int, int, int]
    fov_mm: tuple[float, float]  # extent along the columns (rows * spacing), along the rows
    coverage_mm: float  # slices * slice spacing, identical at both scales so lesions land identically
    thickness_ratio: float = 1.0  # slice thickness / spacing (< 1 means a gap, as in MR)
    minutes_after_study: int = 2

    def geometry(self, scale: Scale, center: Vec3) -> StackGeometry:
        rows, columns, slices = self.full_shape if scale == "full" else self.small_shape
        spacing = self.coverage_mm / slices
        return StackGeometry(
            rows=rows,
            columns=columns,
            slices=slices,
            row_direction=self.row_direction,
            column_direction=self.column_direction,
            pixel_spacing=(self.fov_mm[0] / rows, self.fov_mm[1] / columns),
            slice_spacing=spacing,
            slice_thickness=round(spacing * self.thickness_ratio, 4),
            center_mm=center,
        )


@dataclass(frozen=True)
class StudySpec:
    key: str
    patient: PatientSpec
    site: Site
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    procedure_code: tuple[str, str]  # (code value, meaning) in the site's local coding scheme
    body_part: str
    anatomy: Literal["body", "head"]
    center_mm: Vec3
    lesions: tuple[LesionSpec, ...]
    series: tuple[SeriesSpec, ...]
    referring_physician: str
    history: str
    prior: StudySpec | None = None
    secondary_capture: bool = False


AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
# A 7-24-25 triangle: tilted ~16 degrees about x, with cosines that are exact short decimals.
OBLIQUE = ((1.0, 0.0, 0.0), (0.0, 0.96, -0.28))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))

SIEMENS = Site(
    manufacturer="SIEMENS",
    model="SOMATOM Force",
    software="syngo CT VA50A",
    station="CTAWP73512",
    serial="75123",
    institution="Klinikum Lindenhof",
    address="Lindenstraße 12, 30159 Hannover",
    department="Institut für Radiologie",
    performing_physician="Lindqvist^Astrid",
    operators=("Brandt^Tomas", "Yilmaz^Derya"),
    reading_physician="Hoffmann^Klaus^Dieter",
)
GE = Site(
    manufacturer="GE MEDICAL SYSTEMS",
    model="Discovery CT750 HD",
    software="gmp_vct.62",
    station="RMCCT02",
    serial="CT750-881245",
    institution="Riverside Medical Center",
    address="1200 River Road, Springfield, IL 62701",
    department="Diagnostic Imaging",
    performing_physician="Abernathy^Louise",
    operators=("Castillo^Marco",),
    reading_physician="Whitfield^Gordon",
)
PHILIPS = Site(
    manufacturer="Philips",
    model="Ingenia",
    software="5.7.1",
    station="CSA-MR1",
    serial="45231",
    institution="Clinique Saint-Aubin",
    address="8 Rue des Tilleuls, 69003 Lyon",
    department="Imagerie médicale",
    performing_physician="Garnier^Élise",
    operators=("Roux^Mathieu",),
    reading_physician="Delacroix^Philippe",
    field_strength_t=3.0,
)
CANON = Site(
    manufacturer="CANON_MEC",
    model="Vantage Orian",
    software="V6.0",
    station="HVI-MRI-01",
    serial="MRT2150-3311",
    institution="Harbor View Imaging Center",
    address="77 Wharf Street, Portland, ME 04101",
    department="MRI Suite",
    performing_physician="Tanaka^Yumi",
    operators=("Okonkwo^Chinedu",),
    reading_physician="Fairbanks^Eleanor",
    field_strength_t=1.5,
)

MUELLER = PatientSpec(
    key="patient01",
    name="Müller^Hans^Peter",
    patient_id="4711081501",
    issuer="KLH-KIS",
    other_ids=(("LAB-0047110815", "KLH-LAB"),),
    birth_date="19580412",
    sex="M",
    weight_kg=82.5,
    size_m=1.78,
    address="Eichenweg 3, 30161 Hannover",
    telephone="+49 511 5550182",
)
SMITH = PatientSpec(
    key="patient02",
    name="Smith^Jane^Ann",
    patient_id="RMC00982231",
    issuer="RMC-EPIC",
    other_ids=(("SSN-512-44-8821", "US-SSA"), ("RMCLAB77120", "RMC-LAB")),
    birth_date="19610722",
    sex="F",
    weight_kg=64.0,
    size_m=1.65,
    address="42 Maple Avenue, Springfield, IL 62704",
    telephone="(217) 555-0147",
)
NAKAMURA = PatientSpec(
    key="patient03",
    name="Nakamura^Kenji",
    patient_id="CSA-77410",
    issuer="CSA-DPI",
    other_ids=(("FR-1790175123456", "INS-NIR"),),
    birth_date="19790103",
    sex="M",
    weight_kg=71.2,
    size_m=1.72,
    address="19 Quai Perrache, 69002 Lyon",
    telephone="+33 472550193",
)
OBRIEN = PatientSpec(
    key="patient04",
    name="O'Brien^Siobhan",
    patient_id="HVI5520193",
    issuer="HVI-RIS",
    other_ids=(("MAINECARE-88310442", "ME-MEDICAID"),),
    birth_date="19900925",
    sex="F",
    weight_kg=58.9,
    size_m=1.69,
    address="5 Lighthouse Lane, Cape Elizabeth, ME 04107",
    telephone="(207) 555-0188",
)

_CT_FULL = (512, 512, 120)
_CT_SMALL = (64, 64, 12)
_MR_FULL = (256, 256, 40)
_MR_SMALL = (48, 48, 8)


def _ct_series(key: str, number: int, description: str, protocol: str) -> SeriesSpec:
    return SeriesSpec(
        key=key,
        number=number,
        modality="CT",
        contrast="CT",
        description=description,
        protocol=protocol,
        row_direction=AXIAL[0],
        column_direction=AXIAL[1],
        full_shape=_CT_FULL,
        small_shape=_CT_SMALL,
        fov_mm=(400.0, 400.0),
        coverage_mm=240.0,
    )


BODY_CENTER: Vec3 = (0.0, 0.0, -150.0)
HEAD_CENTER: Vec3 = (0.0, 10.0, 40.0)

# Lesion centres sit on planes sampled by both scales (small CT slices are 20 mm apart around the centre at
# offsets -110, -90, ..., 110), so every lesion is visible in the small set too.
_LIVER_LESION = LesionSpec("L1", "liver lesion", "lesion_hypodense", (-62.0, 8.0, -30.0), (14.0, 12.0, 13.0))
_LUNG_NODULE = LesionSpec("L2", "lung nodule", "nodule", (70.0, -12.0, 70.0), (10.0, 10.0, 11.0))

STUDY_MUELLER = StudySpec(
    key="study01",
    patient=MUELLER,
    site=SIEMENS,
    date="20220608",
    time="101407",
    accession="A22-118834",
    study_id="CT1183",
    description="CT THORAX ABDOMEN KM",
    procedure_code=("CTTA", "CT thorax abdomen with contrast"),
    body_part="CHEST",
    anatomy="body",
    center_mm=BODY_CENTER,
    lesions=(_LIVER_LESION, _LUNG_NODULE),
    series=(_ct_series("series01", 2, "Thorax-Abdomen 2.0 Br40", "TA_KM_Routine"),),
    referring_physician="Becker^Ulrike",
    history="Weight loss, suspected hepatic metastases.",
    secondary_capture=True,
)
STUDY_SMITH_BASELINE = StudySpec(
    key="study01",
    patient=SMITH,
    site=GE,
    date="20230314",
    time="084122",
    accession="RMC23031400417",
    study_id="41772",
    description="CT ABDOMEN PELVIS W CONTRAST",
    procedure_code=("CTAPW", "CT abdomen pelvis with contrast"),
    body_part="ABDOMEN",
    anatomy="body",
    center_mm=BODY_CENTER,
    lesions=(LesionSpec("L1", "liver lesion", "lesion_hypodense", (-50.0, 12.0, -30.0), (12.0, 12.0, 12.0)),),
    series=(_ct_series("series01", 3, "Portal venous 2.0mm", "ABD_PV_Routine"),),
    referring_physician="Nguyen^Thao",
    history="Right upper quadrant pain.",
)
STUDY_SMITH_FOLLOWUP = StudySpec(
    key="study02",
    patient=SMITH,
    site=GE,
    date="20230902",
    time="140551",
    accession="RMC23090201122",
    study_id="42019",
    description="CT ABDOMEN PELVIS W CONTRAST",
    procedure_code=("CTAPW", "CT abdomen pelvis with contrast"),
    body_part="ABDOMEN",
    anatomy="body",
    center_mm=BODY_CENTER,
    lesions=(
        # The same lesion (same lesion_id) has grown since the baseline, and a new one has appeared.
        LesionSpec("L1", "liver lesion", "lesion_hypodense", (-50.0, 12.0, -30.0), (16.0, 15.0, 16.0)),
        LesionSpec("L3", "liver lesion", "lesion_hyperdense", (-35.0, -10.0, -10.0), (10.0, 10.0, 10.0)),
    ),
    series=(_ct_series("series01", 3, "Portal venous 2.0mm", "ABD_PV_Routine"),),
    referring_physician="Nguyen^Thao",
    history="Follow-up of hypodense liver lesion.",
    prior=STUDY_SMITH_BASELINE,
)
STUDY_NAKAMURA = StudySpec(
    key="study01",
    patient=NAKAMURA,
    site=PHILIPS,
    date="20240118",
    time="163210",
    accession="CSA2401180033",
    study_id="MR0433",
    description="IRM ENCEPHALE",
    procedure_code=("IRMENC", "MR brain without contrast"),
    body_part="HEAD",
    anatomy="head",
    center_mm=HEAD_CENTER,
    # Small MR slices are 20 mm apart at offsets -70, -50, ..., 70 from the centre.
    lesions=(LesionSpec("L1", "brain lesion", "lesion_hyperdense", (30.0, -30.0, 10.0), (12.0, 12.0, 12.0)),),
    series=(
        SeriesSpec(
            key="series01",
            number=301,
            modality="MR",
            contrast="T1",
            description="T1 SE AX",
            protocol="T1_SE_TRA",
            row_direction=AXIAL[0],
            column_direction=AXIAL[1],
            full_shape=_MR_FULL,
            small_shape=_MR_SMALL,
            fov_mm=(240.0, 240.0),
            coverage_mm=160.0,
            thickness_ratio=0.9,
        ),
        SeriesSpec(
            key="series02",
            number=401,
            modality="MR",
            contrast="T2",
            description="T2 TSE OBL",
            protocol="T2_TSE_OBL",
            row_direction=OBLIQUE[0],
            column_direction=OBLIQUE[1],
            full_shape=_MR_FULL,
            small_shape=_MR_SMALL,
            fov_mm=(240.0, 240.0),
            coverage_mm=160.0,
            thickness_ratio=0.9,
            minutes_after_study=9,
        ),
    ),
    referring_physician="Moreau^Camille",
    history="Headaches for three months.",
)
STUDY_OBRIEN = StudySpec(
    key="study01",
    patient=OBRIEN,
    site=CANON,
    date="20240506",
    time="110245",
    accession="HV0506-4471",
    study_id="8812",
    description="MR ABDOMEN",
    procedure_code=("MRABD", "MR abdomen"),
    body_part="ABDOMEN",
    anatomy="body",
    center_mm=BODY_CENTER,
    # Coronal slices step along y; small slices are 25 mm apart at offsets -87.5, ..., 87.5.
    lesions=(LesionSpec("L1", "renal lesion", "lesion_hypodense", (55.0, 37.5, -10.0), (15.0, 13.0, 18.0)),),
    series=(
        SeriesSpec(
            key="series01",
            number=5,
            modality="MR",
            contrast="T2",
            description="T2 SSFSE COR",
            protocol="ABD_T2_COR",
            row_direction=CORONAL[0],
            column_direction=CORONAL[1],
            full_shape=_MR_FULL,
            small_shape=_MR_SMALL,
            fov_mm=(384.0, 384.0),
            coverage_mm=200.0,
            thickness_ratio=0.9,
        ),
    ),
    referring_physician="Sullivan^Declan",
    history="Incidental renal finding on ultrasound.",
)

STUDIES: tuple[StudySpec, ...] = (
    STUDY_MUELLER,
    STUDY_SMITH_BASELINE,
    STUDY_SMITH_FOLLOWUP,
    STUDY_NAKAMURA,
    STUDY_OBRIEN,
)
