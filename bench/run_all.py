"""Runs every benchmark in bench/ one after the other (`make bench`); each prints its own ratios.

Copy the printed lines into bench/RESULTS.md with the date and the command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ["bench_deid.py", "bench_ingest.py", "bench_gateway.py", "bench_ohif_load.py", "bench_stow.py",
              "bench_consensus.py", "bench_export.py", "bench_ml_access.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        failed += subprocess.run([sys.executable, str(here / name)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
