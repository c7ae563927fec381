"""The project file schema (pydantic). A project file declares what a project reads, how it is split, who
reads it and the labeling protocol; `yaml_loading` maps validation errors back to file lines.

Every model forbids unknown keys: a typo in a project file must be an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)

from pacslabel.users.models import Role

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
RATIO_TOLERANCE = 1e-6


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class Code(Strict):
    """A DICOM coded concept, named as in the Code Sequence Macro."""

    CodeValue: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    CodingSchemeDesignator: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
    CodeMeaning: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


def _parse_color(value: Any) -> dict[str, Any]:
    """'#rrggbb' (display RGB) or [L, a, b] (CIELab, L 0..100, a/b -128..127) as a small tagged dict."""
    if isinstance(value, str):
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            raise ValueError("a color is '#rrggbb' or a CIELab triple [L, a, b]")
        return {"hex": value.lower()}
    if isinstance(value, list | tuple) and len(value) == 3 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        lightness, a, b = (float(v) for v in value)
        if not 0 <= lightness <= 100 or not -128 <= a <= 127 or not -128 <= b <= 127:
            raise ValueError("CIELab needs L in 0..100 and a, b in -128..127")
        return {"cielab": [lightness, a, b]}
    if isinstance(value, dict) and set(value) in ({"hex"}, {"cielab"}):  # already normalized (stored form)
        return _parse_color(value.get("hex", value.get("cielab")))
    raise ValueError("a color is '#rrggbb' or a CIELab triple [L, a, b]")


class SegmentLabel(Strict):
    label: Text
    category: Code
    type: Code
    color: dict[str, Any]
    description: str | None = None

    @field_validator("color", mode="before")
    @classmethod
    def _color(cls, value: Any) -> dict[str, Any]:
        return _parse_color(value)


class MeasurementKind(StrEnum):
    LENGTH = "length"
    BIDIMENSIONAL = "bidimensional"
    AREA = "area"
    VOLUME = "volume"
    ANGLE = "angle"
    MEAN_INTENSITY = "mean_intensity"


class Measurement(Strict):
    name: Text
    kind: MeasurementKind
    unit: Text
    segment: str | None = None  # the segment label it is measured on, if any


class Question(Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    text: Text
    answers: list[Text] = Field(min_length=2)
    required: bool = True

    @field_validator("answers")
    @classmethod
    def _distinct(cls, answers: list[str]) -> list[str]:
        if len(set(answers)) != len(answers):
            raise ValueError("answers must be distinct")
        return answers


def _distinct_reasons(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("reasons must be distinct")
    return values


class Protocol(Strict):
    """What readers produce. Changing any of it makes a new protocol version; tasks keep the one they had."""

    instructions: str = ""
    segments: list[SegmentLabel] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    questions: list[Question] = Field(default_factory=list)
    exclusion_reasons: list[Text] = Field(default_factory=lambda: ["wrong image", "artifact"])
    skip_reasons: list[Text] = Field(default_factory=lambda: ["images do not load", "outside my expertise"])
    rejection_reasons: list[Text] = Field(default_factory=lambda: ["incomplete segmentation", "wrong label"])

    _reasons = field_validator("exclusion_reasons", "skip_reasons", "rejection_reasons")(_distinct_reasons)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        labels = [s.label for s in self.segments]
        if len(set(labels)) != len(labels):
            raise ValueError("segment labels must be distinct")
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError("question ids must be distinct")
        for measurement in self.measurements:
            if measurement.segment is not None and measurement.segment not in labels:
                raise ValueError(f"measurement {measurement.name!r} refers to unknown segment "
                                 f"{measurement.segment!r}")
        return self


Fraction = Annotated[float, Field(ge=0, le=1)]


class _PerSplit(Strict):
    def get(self, split: str) -> Any:
        return getattr(self, Split(split).value)


class Ratios(_PerSplit):
    train: Fraction
    validation: Fraction
    test: Fraction

    @model_validator(mode="after")
    def _sum_to_one(self) -> Ratios:
        if abs(self.train + self.validation + self.test - 1.0) > RATIO_TOLERANCE:
            raise ValueError("must sum to 1.0")
        return self


class ReadersPerSplit(_PerSplit):
    train: Annotated[int, Field(ge=1, le=50)]
    validation: Annotated[int, Field(ge=1, le=50)]
    test: Annotated[int, Field(ge=1, le=50)]


class ReviewFractions(_PerSplit):
    train: Fraction = 0.1
    validation: Fraction = 1.0
    test: Fraction = 1.0


class SplitSpec(Strict):
    ratios: Ratios
    stratify_by: Literal["manufacturer"] | None = None


class Selection(Strict):
    """Which catalog series belong. Empty lists mean 'any'; patterns are Python regular expressions
    searched (not fully matched) in the de-identified Series Description."""

    item: Literal["study", "series"] = "study"
    routes: list[Text] = Field(default_factory=list)
    modalities: list[Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=1,
                                                      max_length=16)]] = Field(default_factory=list)
    body_parts: list[Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=1,
                                                      max_length=64)]] = Field(default_factory=list)
    series_description: list[str] = Field(default_factory=list)
    exclude_series_description: list[str] = Field(default_factory=list)
    min_instances: int = Field(default=1, ge=1)

    @field_validator("series_description", "exclude_series_description")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
        return patterns


class People(Strict):
    roles: list[Role] = Field(default_factory=list)
    users: list[Text] = Field(default_factory=list)


class Repeats(Strict):
    """Intra-rater repeats: a read item served again to the same reader, unannounced, after a gap."""

    fraction: float = Field(default=0.0, ge=0, le=1)
    min_gap_tasks: int = Field(default=10, ge=1)


class Review(Strict):
    fractions: ReviewFractions = Field(default_factory=ReviewFractions)
    agreement_threshold: float = Field(default=0.7, ge=0, le=1)


class ConsensusWeights(Strict):
    """Reader weights by seniority: a weight per role (e.g. reviewer 2, annotator 1), optionally per user."""

    roles: dict[Role, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    users: dict[Text, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class Consensus(Strict):
    """How several approved reads become one label (review.workflow.compute_consensus)."""

    method: Literal["majority", "staple"] = "majority"
    weights: ConsensusWeights | None = None


class Calibration(Strict):
    items: int = Field(default=0, ge=0)
    split: Split = Split.TRAIN


class FirstBatch(Strict):
    items: int = Field(default=0, ge=0)


class Release(Strict):
    """Calibration batch (read by every reader), then a first batch, then (optionally) every new item."""

    calibration: Calibration = Field(default_factory=Calibration)
    first_batch: FirstBatch = Field(default_factory=FirstBatch)
    continuous: bool = True


class ClinicalAttribute(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    type: Literal["number", "text", "choice", "boolean"] = "text"
    choices: list[Text] = Field(default_factory=list)
    unit: str | None = None

    @model_validator(mode="after")
    def _choices(self) -> ClinicalAttribute:
        if self.type == "choice" and len(self.choices) < 2:
            raise ValueError("a choice attribute needs at least two choices")
        if self.type != "choice" and self.choices:
            raise ValueError("choices are only for type: choice")
        if self.name in RESERVED_CLINICAL_COLUMNS:
            raise ValueError(f"{self.name!r} is a reserved column")
        return self


RESERVED_CLINICAL_COLUMNS = ("patient", "age", "sex")


class Context(Strict):
    """De-identified context shown to readers beside the images."""

    show_age_bracket: bool = True
    show_sex: bool = True
    clinical_attributes: list[ClinicalAttribute] = Field(default_factory=list)


class Export(Strict):
    """What the ML role receives of released items besides the final label (see export/released.py)."""

    # The approved individual reads (latest version of each read task) of a released item, beside its final
    # label: for teams that train on reader variability. Drafts are never shown.
    individual_reads: StrictBool = False


def _deid_options_model() -> type[BaseModel] | None:
    """A strict model with the fields of pacslabel.deid.DeidOptions, so that an unknown or mistyped option is
    reported at its own line; None when the deid room is not installed."""
    try:
        from pacslabel.deid.options import DeidOptions
    except ImportError:  # pragma: no cover - deid lands separately
        return None
    fields: dict[str, Any] = {}
    for option in dataclasses.fields(DeidOptions):
        if str(option.type) == "bool":
            fields[option.name] = (StrictBool | None, None)
        else:  # safe_private_tags: [[private creator, element offset], ...]
            fields[option.name] = (list[tuple[str, Annotated[int, Field(ge=0, le=255)]]] | None, None)
    return create_model("DeidentificationOptions", __base__=Strict, **fields)


DeidentificationOptions = _deid_options_model()
DeidentificationSpec = DeidentificationOptions if DeidentificationOptions is not None else dict[str, Any]


class ProjectSpec(Strict):
    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    name: Text
    description: str = ""
    active: bool = True
    selection: Selection = Field(default_factory=Selection)
    deidentification: DeidentificationSpec = Field(default_factory=dict)  # type: ignore[valid-type]
    protocol: Protocol = Field(default_factory=Protocol)
    split: SplitSpec
    readers_per_split: ReadersPerSplit
    readers: People = Field(default_factory=lambda: People(roles=[Role.ANNOTATOR, Role.REVIEWER]))
    reviewers: People = Field(default_factory=lambda: People(roles=[Role.REVIEWER]))
    repeats: Repeats = Field(default_factory=Repeats)
    review: Review = Field(default_factory=Review)
    consensus: Consensus = Field(default_factory=Consensus)
    release: Release = Field(default_factory=Release)
    context: Context = Field(default_factory=Context)
    export: Export = Field(default_factory=Export)

    @field_serializer("deidentification")
    def _only_given_options(self, options: Any) -> dict[str, Any]:
        # Only the options the file sets are kept; the rest are the DeidOptions defaults.
        if isinstance(options, BaseModel):
            return options.model_dump(mode="json", exclude_none=True)
        return dict(options)


def deid_options(spec: ProjectSpec) -> Any:
    """The project's DeidOptions (for the ingest worker)."""
    from pacslabel.deid.options import DeidOptions

    values = spec.model_dump(mode="python")["deidentification"]
    if "safe_private_tags" in values:
        values["safe_private_tags"] = frozenset((str(c), int(o)) for c, o in values["safe_private_tags"])
    return DeidOptions(**values)
