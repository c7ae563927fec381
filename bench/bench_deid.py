"""De-identification throughput: pacslabel ``deidentify_bytes`` vs dicognito, same files, one process.

Both sides do the whole job per instance: parse Part-10 bytes, de-identify, encode Part-10 bytes to memory.
The pydicom read + write floor is printed as the ceiling any pure-Python tool can reach. Runs are
interleaved (pacslabel, dicognito, floor, pacslabel, ...) so that a noisy shared machine hurts both alike;
the medians are reported.

    .venv/bin/python bench/bench_deid.py                      # 200 CT instances of the full demo set (512x512)
    .venv/bin/python bench/bench_deid.py --scale small -n 300
    .venv/bin/python bench/bench_deid.py --data-dir /tmp/demo  # reuse generated files
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread, dcmwrite

from pacslabel.deid import Deidentifier, DeidOptions


def _demo_files(data_dir: Path | None, scale: str, modality: str) -> list[Path]:
    try:
        from pacslabel.demo.synthetic import generate_demo_studies
    except ImportError:  # the generator is optional for this script
        return []
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    if not (data_dir / "manifest.json").exists():
        print(f"generating the {scale} demo set in {data_dir} ...", flush=True)
        generate_demo_studies(data_dir, seed=7, scale=scale)  # type: ignore[arg-type]
    demo = sorted(data_dir.rglob("*.dcm"))
    return [p for p in demo if dcmread(p, stop_before_pixels=True, specific_tags=["Modality"]).Modality == modality]


def _pydicom_test_files() -> list[Path]:
    from pydicom.data import get_testdata_file

    return [Path(p) for p in (get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")) if p]


def _time(label: str, work: Callable[[bytes], object], payloads: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in payloads:
        work(raw)
    elapsed = time.perf_counter() - start
    rate = len(payloads) / elapsed
    print(f"  {label:<10} {rate:8.1f} inst/s  ({1000 * elapsed / len(payloads):.2f} ms/inst)", flush=True)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--instances", type=int, default=200, help="instances per run (files are cycled)")
    parser.add_argument("-r", "--runs", type=int, default=5, help="runs per tool; medians are reported")
    parser.add_argument("--scale", choices=("full", "small"), default="full", help="demo set scale")
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--data-dir", type=Path, default=None, help="existing or target demo directory")
    args = parser.parse_args(argv)

    try:
        from dicognito.anonymizer import Anonymizer
    except ImportError:
        print("dicognito is not installed (pip install dicognito)", file=sys.stderr)
        return 2

    files = _demo_files(args.data_dir, args.scale, args.modality) or _pydicom_test_files()
    payloads = [files[i % len(files)].read_bytes() for i in range(args.instances)]
    size_kb = statistics.mean(len(p) for p in payloads) / 1024
    print(f"{len(payloads)} instances from {len(files)} {args.modality} files, mean {size_kb:.0f} KB", flush=True)

    deidentifier = Deidentifier(b"bench-key-" + b"0" * 22, DeidOptions())
    anonymizer = Anonymizer(seed="bench")

    def pacslabel_one(raw: bytes) -> object:
        return deidentifier.deidentify_bytes(raw).data

    def dicognito_one(raw: bytes) -> object:
        ds = dcmread(io.BytesIO(raw))
        anonymizer.anonymize(ds)
        out = io.BytesIO()
        dcmwrite(out, ds)
        return out.getvalue()

    def floor_one(raw: bytes) -> object:
        ds = dcmread(io.BytesIO(raw))
        out = io.BytesIO()
        dcmwrite(out, ds)
        return out.getvalue()

    for work in (pacslabel_one, dicognito_one, floor_one):  # warm-up: imports, table load, caches
        work(payloads[0])

    rates: dict[str, list[float]] = {"pacslabel": [], "dicognito": [], "floor": []}
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs}", flush=True)
        rates["pacslabel"].append(_time("pacslabel", pacslabel_one, payloads))
        rates["dicognito"].append(_time("dicognito", dicognito_one, payloads))
        rates["floor"].append(_time("read+write", floor_one, payloads))

    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratios = [p / d for p, d in zip(rates["pacslabel"], rates["dicognito"], strict=True)]
    print()
    print(f"pacslabel        {medians['pacslabel']:8.1f} inst/s (median of {args.runs})")
    print(f"dicognito 0.19   {medians['dicognito']:8.1f} inst/s")
    print(f"pydicom floor    {medians['floor']:8.1f} inst/s (read + write only)")
    print(
        f"ratio pacslabel / dicognito: {medians['pacslabel'] / medians['dicognito']:.2f}x "
        f"(median of per-run ratios {statistics.median(ratios):.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
