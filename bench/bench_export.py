"""Export benchmark: a 20-study released project exported to NIfTI images + label maps + MONAI datalist.

Measured in one run, on the same files, alternating:
  B) the pacslabel NIfTI export of a snapshot (``download_to(..., "nifti")``): per instance a lookup and a GET
     of the stored file from Orthanc, a SHA-256 check against the manifest, dcmread; per series the geometry,
     the modality volume, the affine, nibabel + gzip; per item the final SEG read onto the grid, renumbered
     to protocol labels and written as a label map; then the datalist;
  A1) a dcm2niix-like anchor: plain pydicom reads of the same DICOM files from local disk (a dicom-tree
     download), sorted by position, nibabel writes of image volumes with the same gzip level;
  A2) nibabel + gzip writing the same image volumes from arrays already in memory (the writing floor).
Also: the snapshot creation (manifest with first-time hashing of every source instance) and a DICOM zip.

Prints instances (images) per second, medians and the ratios B/A1, B/A2.
Usage: .venv/bin/python bench/bench_export.py [--studies 20] [--slices 40] [--size 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import statistics
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared world builder lives under tests/

from tests.export.snapshot_world import build_world  # noqa: E402
from tests.fixtures.orthanc import orthanc_test_settings  # noqa: E402

from pacslabel.annotations.geometry import SourceSeries  # noqa: E402
from pacslabel.annotations.nifti_geometry import affine_for, to_nifti_array  # noqa: E402
from pacslabel.db import create_db_engine, make_sessionmaker, session_scope  # noqa: E402
from pacslabel.db.migrate import upgrade_to_head  # noqa: E402
from pacslabel.export import snapshots  # noqa: E402
from pacslabel.export.archives import download_to  # noqa: E402
from pacslabel.export.manifest import parse_manifest  # noqa: E402
from pacslabel.export.nifti import GZIP_LEVEL, modality_volume  # noqa: E402
from pacslabel.orthanc.client import OrthancClient  # noqa: E402
from pacslabel.orthanc.supervisor import OrthancProcess  # noqa: E402
from pacslabel.users.models import User  # noqa: E402


def anchor_from_files(tree: Path, out: Path) -> int:
    """dcm2niix-like: read each series folder with pydicom, sort along the normal, write .nii.gz."""
    written = 0
    for series_dir in sorted({p.parent for p in tree.rglob("*.dcm")}):
        datasets = [dcmread(p) for p in series_dir.glob("*.dcm")]
        if datasets[0].Modality == "SEG":
            continue
        source = SourceSeries.from_instances(datasets)
        image = nib.Nifti1Image(np.ascontiguousarray(to_nifti_array(modality_volume(source.datasets))),
                                affine_for(source))
        (out / f"{series_dir.name}.nii.gz").write_bytes(gzip.compress(image.to_bytes(), GZIP_LEVEL, mtime=0))
        written += len(datasets)
    return written


def anchor_from_memory(volumes: list[tuple[np.ndarray, np.ndarray]], out: Path) -> None:
    for index, (volume, affine) in enumerate(volumes):
        image = nib.Nifti1Image(np.ascontiguousarray(to_nifti_array(volume)), affine)
        (out / f"{index}.nii.gz").write_bytes(gzip.compress(image.to_bytes(), GZIP_LEVEL, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        # The tests' managed-Orthanc settings (free ports, test secrets) with the service's default timeouts.
        settings = orthanc_test_settings(root / "var", log_level="WARNING", orthanc_timeout_s=30.0,
                                         orthanc_startup_timeout_s=60.0)
        url = f"sqlite:///{root / 'pacslabel.db'}"
        upgrade_to_head(url)
        engine = create_db_engine(url)
        sessions = make_sessionmaker(engine)
        with OrthancProcess(settings) as _, OrthancClient.from_settings(settings) as orthanc:
            started = time.perf_counter()
            splits = [("train", "train", "train", "validation", "test")[i % 5] for i in range(args.studies)]
            world = build_world(sessions, orthanc, slug="bench-export", splits=splits, slices=args.slices,
                                rows=args.size, columns=args.size, consensus_index=None, renumbered_index=1)
            instances = args.studies * args.slices
            print(f"world: {args.studies} studies x {args.slices} slices {args.size}x{args.size} "
                  f"({instances} instances) + {args.studies} SEGs, built in {time.perf_counter() - started:.1f} s")

            timings: dict[str, list[float]] = {"snapshot (first hashing)": [], "snapshot (hashes cached)": []}
            for label in timings:
                with session_scope(sessions) as session:
                    admin = session.query(User).filter_by(username="admin1").one()
                    project = snapshots.project_by_reference(session, "bench-export")
                    started = time.perf_counter()
                    row = snapshots.create_snapshot(session, orthanc, admin, project, include_test=True)
                    timings[label].append(time.perf_counter() - started)
                    manifest = row.manifest
            print(f"snapshot: {timings['snapshot (first hashing)'][0]:.2f} s with first-time hashing, "
                  f"{timings['snapshot (hashes cached)'][0]:.2f} s with cached hashes")
            document = parse_manifest(manifest)
            tree, _ = download_to(orthanc, document, manifest, "dicom-tree", root / "tree")
            volumes = []
            for item in world.items:
                source = SourceSeries.from_instances([dcmread(BytesIO(b)) for b in (
                    orthanc.get_instance_file(orthanc.find_instance(str(ds.SOPInstanceUID)) or "")
                    for ds in item.datasets)])
                volumes.append((modality_volume(source.datasets), affine_for(source)))

            results: dict[str, list[float]] = {"B pacslabel NIfTI export": [], "A1 pydicom files + nibabel": [],
                                               "A2 nibabel from memory": [], "DICOM zip export": []}
            for run in range(args.runs):
                out = root / f"run{run}"
                started = time.perf_counter()
                download_to(orthanc, document, manifest, "nifti", out / "b")
                results["B pacslabel NIfTI export"].append(time.perf_counter() - started)
                (out / "a1").mkdir(parents=True)
                started = time.perf_counter()
                assert anchor_from_files(tree, out / "a1") == instances
                results["A1 pydicom files + nibabel"].append(time.perf_counter() - started)
                (out / "a2").mkdir(parents=True)
                started = time.perf_counter()
                anchor_from_memory(volumes, out / "a2")
                results["A2 nibabel from memory"].append(time.perf_counter() - started)
                started = time.perf_counter()
                download_to(orthanc, document, manifest, "dicom-zip", out / "zip")
                results["DICOM zip export"].append(time.perf_counter() - started)
            medians = {name: statistics.median(values) for name, values in results.items()}
            for name, values in results.items():
                runs = ", ".join(f"{v:.2f}" for v in values)
                print(f"{name:30s} runs [{runs}] s  median {medians[name]:.2f} s  "
                      f"{instances / medians[name]:.0f} instances/s")
            b = medians["B pacslabel NIfTI export"]
            print(f"ratio B/A1 {b / medians['A1 pydicom files + nibabel']:.2f}  "
                  f"B/A2 {b / medians['A2 nibabel from memory']:.2f}")
        engine.dispose()


if __name__ == "__main__":
    main()
