"""Project files: the example applies, errors name line and field, re-apply is a no-op, a protocol change
bumps the protocol version, every apply is audited."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacslabel.audit.models import AuditEvent
from pacslabel.projects.models import ProtocolVersion
from pacslabel.projects.service import apply_project_file
from pacslabel.projects.yaml_loading import ProjectFileError, parse_project_file
from tests.projects.helpers import apply_dict, project_dict

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "projects").glob("*.yaml"))
EXAMPLE = (Path(__file__).parents[2] / "examples" / "projects" / "prostate-mri.yaml").read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def _error(text: str) -> ProjectFileError:
    with pytest.raises(ProjectFileError) as caught:
        parse_project_file(text, "project.yaml")
    return caught.value


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_project_files_apply(db_session: Session, path: Path) -> None:
    result = apply_project_file(db_session, path.read_text(), "tester", filename=path.name)
    assert result.created and result.protocol_version == 1
    spec = parse_project_file(path.read_text())
    assert spec.protocol.segments[0].category.CodeValue == "49755003"
    assert spec.readers_per_split.validation == 3


def test_ratios_not_summing_to_one_name_line_and_field() -> None:
    text = EXAMPLE.replace("ratios: {train: 0.7, validation: 0.15, test: 0.15}",
                           "ratios: {train: 0.7, validation: 0.2, test: 0.15}")
    error = _error(text)
    assert str(error) == f"project.yaml line {_line_of(text, 'ratios:')}: split.ratios: must sum to 1.0"


def test_bad_yaml_names_the_line() -> None:
    text = "slug: x\nname: [unclosed\nsplit: {}\n"
    error = _error(text)
    assert error.problems[0].line is not None and "not valid YAML" in str(error)
    assert str(error).startswith("project.yaml line ")


def test_wrong_type_names_line_and_field() -> None:
    text = EXAMPLE.replace("min_instances: 10", "min_instances: ten")
    error = _error(text)
    assert len(error.problems) == 1
    assert str(error).startswith(f"project.yaml line {_line_of(text, 'min_instances')}: selection.min_instances: ")
    assert "integer" in str(error)


def test_unknown_key_names_line_and_field() -> None:
    text = EXAMPLE.replace("  stratify_by: manufacturer", "  stratify_by: manufacturer\n  shuffle: true")
    error = _error(text)
    assert str(error) == f"project.yaml line {_line_of(text, 'shuffle')}: split.shuffle: unknown key"


def test_unknown_deidentification_option_names_line_and_field() -> None:
    text = EXAMPLE.replace("  retain_uids: false", "  retain_uid: false")
    error = _error(text)
    message = str(error)
    assert message.startswith(f"project.yaml line {_line_of(text, 'retain_uid:')}: deidentification.retain_uid: "
                              "unknown de-identification option")
    assert "retain_uids" in message  # the known options are listed


def test_deidentification_option_of_wrong_type_is_refused() -> None:
    text = EXAMPLE.replace("  clean_descriptors: true", "  clean_descriptors: maybe")
    error = _error(text)
    assert error.problems[0].field == "deidentification.clean_descriptors"
    assert error.problems[0].line == _line_of(text, "clean_descriptors")


def test_errors_inside_lists_name_the_index_and_line() -> None:
    text = EXAMPLE.replace('color: "#e6194b"', 'color: "red"')
    error = _error(text)
    assert error.problems[0].field == "protocol.segments[0].color"
    assert error.problems[0].line == _line_of(text, 'color: "red"')


def test_missing_required_section_and_duplicate_keys_are_reported() -> None:
    data = project_dict()
    del data["readers_per_split"]
    assert "readers_per_split: required, missing" in str(_error(yaml.safe_dump(data)))
    duplicated = EXAMPLE.replace("name: Prostate MRI lesions (bpMRI)",
                                 "name: Prostate MRI lesions (bpMRI)\nname: again")
    error = _error(duplicated)
    assert str(error) == f"project.yaml line {_line_of(duplicated, 'name: again')}: name: duplicate key"


def test_reapplying_the_same_file_is_a_no_op_but_audited(db_session: Session) -> None:
    first = apply_project_file(db_session, EXAMPLE, "admin1")
    second = apply_project_file(db_session, EXAMPLE, "admin1")
    assert first.created and not second.created and not second.changed
    assert second.protocol_version == 1
    assert len(db_session.scalars(select(ProtocolVersion)).all()) == 1
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "project_apply")).all()
    assert [e.detail.get("changed", True) for e in events] == [True, False]  # type: ignore[union-attr]


def test_protocol_change_bumps_the_version_and_keeps_the_old_one(db_session: Session) -> None:
    project = apply_dict(db_session, project_dict())
    assert project.protocol_version == 1
    # A non-protocol change does not bump the protocol version.
    apply_dict(db_session, project_dict(name="Renamed"))
    assert project.protocol_version == 1 and project.name == "Renamed"
    changed = project_dict(name="Renamed")
    changed["protocol"]["exclusion_reasons"] = ["wrong image", "artifact", "motion"]
    result = apply_project_file(db_session, yaml.safe_dump(changed), "tester")
    assert result.protocol_bumped and result.protocol_version == 2 and result.changed_sections == ["protocol"]
    versions = db_session.scalars(select(ProtocolVersion).order_by(ProtocolVersion.version)).all()
    assert [v.version for v in versions] == [1, 2]
    assert "motion" not in versions[0].protocol["exclusion_reasons"]
    assert "motion" in versions[1].protocol["exclusion_reasons"]
