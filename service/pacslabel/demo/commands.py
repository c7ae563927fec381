"""``pacslabel demo ...``: write the synthetic demo studies."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from pacslabel.demo.synthetic import generate_demo_studies

app = typer.Typer(help="Synthetic demo and test studies (fictional patients, full of planted PHI).")


class ScaleOption(StrEnum):
    full = "full"
    small = "small"


@app.callback()
def _group() -> None:
    """Keep ``generate`` a named sub-command even while it is the only one."""


@app.command()
def generate(
    outdir: Path = typer.Argument(..., help="Directory to write <patient>/<study>/<series>/NNNN.dcm into."),
    seed: int = typer.Option(7, help="Same seed, same bytes; UIDs and noise depend on it."),
    scale: ScaleOption = typer.Option(
        ScaleOption.full, help="full: CT 512×512×120, MR 256×256×40; small: CT 64×64×12, MR 48×48×8."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write CT, MR and a burned-in Secondary Capture for four fictional patients, plus manifest.json."""
    demo = generate_demo_studies(outdir, seed=seed, scale=scale.value, progress=progress)
    studies = [study for patient in demo.patients for study in patient.studies]
    typer.echo(
        f"Wrote {len(demo.files)} files ({len(demo.patients)} patients, {len(studies)} studies, "
        f"{len(demo.series())} series, {len(demo.lesions)} lesion records) to {demo.outdir}; "
        f"manifest {demo.manifest_path}"
    )
