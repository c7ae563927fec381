"""NIfTI export of a snapshot on a real Orthanc and database: nibabel loads every image and label map with the
affine of the DICOM geometry, the images hold the stored pixels, the label maps hold exactly the saved labels in
protocol numbering (also when a reader numbered segments differently, and for a consensus), and the MONAI
datalist is valid and follows the splits."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pacslabel.annotations.nifti_geometry import to_nifti_array
from pacslabel.export.datalist import datalist_problems
from pacslabel.export.manifest import parse_manifest
from tests.export.snapshot_world import PIXEL_SPACING, SLICE_SPACING, ServedWorld, World, WorldItem, served_world
from tests.fixtures.orthanc import RunningOrthanc

Env = ServedWorld  # the client and the world of one test


@pytest.fixture
def env(orthanc: RunningOrthanc, db_url: str, tmp_path: Path) -> Iterator[Env]:
    with served_world(orthanc, db_url, tmp_path / "var", slug="nifti-export") as served:
        yield served


def _dicom_affine(item: WorldItem) -> np.ndarray:
    """The expected affine from the DICOM attributes alone (PS3.3 C.7.6.2.1.1), LPS -> RAS."""
    first, last = item.datasets[0], item.datasets[-1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    step = (np.asarray(last.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)) / (
        len(item.datasets) - 1)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = iop[:3] * column_spacing, iop[3:] * row_spacing, step
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _load(archive: zipfile.ZipFile, path: str, tmp_path: Path) -> nib.Nifti1Image:
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(archive.read(path))
    return nib.load(target)  # type: ignore[return-value]


def _check_export(world: World, archive: zipfile.ZipFile, tmp_path: Path, expected_items: set[int]) -> dict:
    datalist = json.loads(archive.read("dataset.json"))
    manifest = parse_manifest(archive.read("manifest.json"))
    archive.extractall(tmp_path / "unzipped")
    assert datalist_problems(datalist, tmp_path / "unzipped") == []
    assert datalist["labels"] == {"0": "background", "1": "Liver lesion", "2": "Cyst", "3": "Liver"}
    entries = {"train": datalist["training"], "validation": datalist["validation"], "test": datalist["test"]}
    assert {e["item_id"] for e in manifest["items"]} == expected_items
    for split, records in entries.items():
        assert len(records) == sum(1 for i in world.items if i.split == split and i.item_id in expected_items)
    for item in (i for i in world.items if i.item_id in expected_items):
        [record] = [r for r in entries[item.split] if f"_item{item.item_id}_" in r["image"]]
        image = _load(archive, record["image"], tmp_path)
        label = _load(archive, record["label"], tmp_path)
        affine = _dicom_affine(item)
        for loaded in (image, label):
            np.testing.assert_allclose(loaded.affine, affine, atol=1e-4)
            np.testing.assert_allclose(loaded.header.get_qform(), affine, atol=1e-4)
            np.testing.assert_allclose(loaded.header.get_zooms(), (PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING),
                                       atol=1e-5)
            assert loaded.shape == (32, 24, 6)  # (columns, rows, slices)
        pixels = np.stack([ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept) for ds in item.datasets])
        np.testing.assert_array_equal(np.asarray(image.dataobj), to_nifti_array(pixels))
        assert np.asarray(image.dataobj).dtype == np.int16
        saved = np.asarray(label.dataobj)
        np.testing.assert_array_equal(saved, to_nifti_array(item.labels))
        assert int((saved == 1).sum()) == int((item.labels == 1).sum()) > 0
    return datalist


def test_nifti_zip_loads_with_nibabel_with_the_dicom_affine_and_the_saved_labels(env: Env, tmp_path: Path) -> None:
    world = env.world
    created = env.client.post(f"/api/projects/{world.project_id}/snapshots", headers=world.headers("admin1"),
                              json={"include_test": True}).json()
    response = env.client.get(f"/api/snapshots/{created['id']}/download?format=nifti-zip",
                              headers=world.headers("admin1"))
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    datalist = _check_export(world, archive, tmp_path, {i.item_id for i in world.items})
    assert (datalist["numTraining"], datalist["numValidation"], datalist["numTest"]) == (2, 1, 1)
    # One image and one label map per item, plus the datalist and the manifest.
    assert len(archive.namelist()) == 2 * len(world.items) + 2
    # The same snapshot gives the same bytes (fixed gzip mtime and zip times).
    again = env.client.get(f"/api/snapshots/{created['name']}/download?format=nifti-zip",
                           headers=world.headers("admin1"))
    assert again.content == response.content


def test_ml_user_nifti_export_has_no_test_split(env: Env, tmp_path: Path) -> None:
    world = env.world
    created = env.client.post(f"/api/projects/{world.project_slug}/snapshots", headers=world.headers("ml1")).json()
    response = env.client.get(f"/api/snapshots/{created['id']}/download?format=nifti-zip",
                              headers=world.headers("ml1"))
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    datalist = _check_export(world, archive, tmp_path, {i.item_id for i in world.items if i.split != "test"})
    assert datalist["test"] == [] and datalist["numTest"] == 0
    test_item = next(i for i in world.items if i.split == "test")
    assert not [name for name in archive.namelist() if f"_item{test_item.item_id}_" in name]
