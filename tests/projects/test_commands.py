"""`pacslabel project ...` (the typer app the lead mounts as `pacslabel project`)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pacslabel.projects.commands import app
from pacslabel.projects.yaml_loading import ProjectFileError

EXAMPLE = Path(__file__).parents[2] / "examples" / "projects" / "prostate-mri.yaml"


def test_apply_creates_then_reports_unchanged_and_bad_files_name_the_line(cli_env: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["apply", str(EXAMPLE)])
    assert first.exit_code == 0, first.output
    assert "project prostate-mri-2026 created (protocol version 1)" in first.output
    second = runner.invoke(app, ["apply", str(EXAMPLE)])
    assert "unchanged" in second.output
    bad = cli_env / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("validation: 3", "validation: three"))
    result = runner.invoke(app, ["apply", str(bad)])
    assert isinstance(result.exception, ProjectFileError)  # pacslabel.cli.main prints it as one line, exit 1
    assert f"{bad} line " in str(result.exception) and "readers_per_split.validation" in str(result.exception)
    listed = runner.invoke(app, ["list"])
    assert "prostate-mri-2026" in listed.output


def test_import_clinical_reports_rows(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["apply", str(EXAMPLE)]).exit_code == 0
    csv_file = cli_env / "clinical.csv"
    csv_file.write_text("patient,psa\nNOBODY,3\n")
    result = runner.invoke(app, ["import-clinical", "prostate-mri-2026", str(csv_file)])
    assert "row 2, column 'patient'" in str(result.exception)
