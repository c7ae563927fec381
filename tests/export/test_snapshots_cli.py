"""`pacslabel export ...` as an ML engineer or admin uses it, on a real Orthanc and database: snapshot, list,
download as a DICOM folder tree, a DICOM zip and NIfTI folders, diff, and the log of all of it."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from pacslabel.annotations.nifti_geometry import to_nifti_array
from pacslabel.db import create_db_engine, make_sessionmaker
from pacslabel.export.commands import app
from pacslabel.export.datalist import datalist_problems
from pacslabel.export.manifest import manifest_objects, parse_manifest
from tests.export.snapshot_world import add_released_item, build_world
from tests.fixtures.orthanc import RunningOrthanc


def test_cli_snapshot_list_download_diff_and_log(orthanc: RunningOrthanc, db_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_db_engine(db_url)
    world = build_world(make_sessionmaker(engine), orthanc.client, slug="cli-export",
                        splits=("train", "validation", "test"))
    settings = orthanc.settings
    for key, value in {"DATABASE_URL": db_url, "VAR_DIR": str(tmp_path / "var"), "LOG_FORMAT": "text",
                       "ORTHANC_URL": settings.orthanc_url, "ORTHANC_USERNAME": settings.orthanc_username,
                       "ORTHANC_PASSWORD": settings.secret("orthanc_password")}.items():
        monkeypatch.setenv(f"PACSLABEL_{key}", value)
    runner = CliRunner()

    made = runner.invoke(app, ["snapshot", "cli-export", "--as", "ml1"])
    assert made.exit_code == 0, made.output
    assert made.output.startswith("snapshot cli-export@1: 2 items, ")  # the test item is left out for ml1
    refused = runner.invoke(app, ["snapshot", "cli-export", "--as", "ml1", "--include-test"])
    assert refused.exit_code != 0 and "test-split access" in str(refused.exception)
    assert runner.invoke(app, ["snapshot", "cli-export", "--include-test"]).exit_code == 0  # first admin
    listed = runner.invoke(app, ["list", "cli-export"])
    assert [line.split("\t")[0] for line in listed.output.splitlines()] == ["cli-export@1", "cli-export@2"]
    assert "+test" in listed.output.splitlines()[1] and "+test" not in listed.output.splitlines()[0]

    # A DICOM folder tree: patient / study / series / instance, every file with the manifest's checksum.
    tree = runner.invoke(app, ["download", "cli-export@2", "--format", "dicom-tree", "--out", str(tmp_path / "dl"),
                               "--no-progress"])
    assert tree.exit_code == 0, tree.output
    folder = tmp_path / "dl" / "cli-export_2-dicom"
    manifest = parse_manifest((folder / "manifest.json").read_bytes())
    objects = manifest_objects(manifest)
    files = sorted(p for p in folder.rglob("*.dcm"))
    assert len(files) == len(objects) == manifest["counts"]["objects"]
    for obj in objects:
        path = folder / obj.patient_pseudonym / obj.study_instance_uid / obj.series_instance_uid / (
            f"{obj.sop_instance_uid}.dcm")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == obj.sha256

    zipped = runner.invoke(app, ["download", "1", "--format", "dicom-zip", "--out", str(tmp_path / "dl"),
                                 "--as", "ml1", "--no-progress"])
    assert zipped.exit_code == 0, zipped.output
    archive = zipfile.ZipFile(tmp_path / "dl" / "cli-export_1-dicom.zip")
    assert len(archive.namelist()) == manifest_objects(parse_manifest(archive.read("manifest.json"))).__len__() + 1

    # NIfTI folders with a valid datalist; the label maps hold the saved labels.
    nifti = runner.invoke(app, ["download", "cli-export@2", "--format", "nifti", "--out", str(tmp_path / "dl")])
    assert nifti.exit_code == 0, nifti.output
    root = tmp_path / "dl" / "cli-export_2-nifti"
    datalist = json.loads((root / "dataset.json").read_text())
    assert datalist_problems(datalist, root) == []
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    for item in world.items:
        [record] = [r for key in ("training", "validation", "test") for r in datalist[key]
                    if f"_item{item.item_id}_" in r["image"]]
        label = nib.load(root / record["label"])
        np.testing.assert_array_equal(np.asarray(label.dataobj), to_nifti_array(item.labels))  # type: ignore[attr-defined]

    verified = runner.invoke(app, ["verify", "cli-export@2"])
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith("snapshot cli-export@2: manifest rebuilt byte for byte (sha256 ")

    # What was released since snapshot 2.
    late = add_released_item(world, "train", "cli-late", seed=21)
    assert runner.invoke(app, ["snapshot", "cli-export", "--include-test"]).exit_code == 0
    diff = runner.invoke(app, ["diff", "cli-export@2", "cli-export@3"])
    assert diff.exit_code == 0, diff.output
    assert diff.output.splitlines()[0] == "cli-export@2 -> cli-export@3: 1 added, 0 removed, 0 changed, 3 unchanged"
    assert diff.output.splitlines()[1].startswith(f"added\titem {late.item_id}\ttrain\t")
    as_json = json.loads(runner.invoke(app, ["diff", "cli-export@1", "cli-export@3", "--json"]).output)
    assert as_json["counts"] == {"added": 2, "removed": 0, "changed": 0, "unchanged": 2}

    # The log: three creations and three downloads, newest first, with byte counts of what was written.
    log = runner.invoke(app, ["log", "--project", "cli-export"])
    assert log.exit_code == 0, log.output
    rows = [line.split("\t") for line in log.output.splitlines()]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("admin1", "created", "cli-export@3", "manifest"),
        ("admin1", "downloaded", "cli-export@2", "nifti"),
        ("ml1", "downloaded", "cli-export@1", "dicom-zip"),
        ("admin1", "downloaded", "cli-export@2", "dicom-tree"),
        ("admin1", "created", "cli-export@2", "manifest"),
        ("ml1", "created", "cli-export@1", "manifest"),
    ]
    assert int(rows[2][5]) == (tmp_path / "dl" / "cli-export_1-dicom.zip").stat().st_size
    assert all(r[6] == "cli" for r in rows)
    assert "the data-flow log is for admins" in str(runner.invoke(app, ["log", "--as", "ml1"]).exception)
    bad = runner.invoke(app, ["download", "cli-export@2", "--format", "tar", "--out", str(tmp_path / "dl")])
    assert bad.exit_code != 0 and "unknown format 'tar'" in str(bad.exception)
    engine.dispose()
