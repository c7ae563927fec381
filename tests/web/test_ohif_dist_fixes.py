"""The copy of the OHIF dist that pacslabel serves carries the fix for the blank-after-reload bug: onnxruntime-web's
emscripten loaders must not read `__filename` unguarded (see `_SCRIPT_DIR_FALLBACK` in web/ohif_hosting.py and
tests/browser/test_ohif_reload.py for the behaviour in a browser)."""

from __future__ import annotations

from pathlib import Path

from pacslabel.web.ohif_hosting import prepare_ohif_dist

ROOT = Path(__file__).resolve().parents[2]
OHIF_DIST = ROOT / "var" / "ohif" / "current" / "dist"
UNGUARDED = "true&&(e=e||__filename)"
GUARDED = 'typeof __filename<"u"&&(e=e||__filename)'


def _count(directory: Path, needle: str) -> int:
    return sum(path.read_text(errors="surrogateescape").count(needle) for path in directory.glob("*.js"))


def test_served_dist_guards_every_filename_fallback_of_the_onnxruntime_loaders(tmp_path: Path) -> None:
    assert (OHIF_DIST / "index.html").is_file(), "scripts/setup.sh installs the OHIF dist"
    unguarded_in_npm_dist = _count(OHIF_DIST, UNGUARDED)
    assert unguarded_in_npm_dist == 2  # OHIF 3.12.10: the two emscripten loaders of ort.webgpu in chunk 7431
    served = prepare_ohif_dist(OHIF_DIST, tmp_path)
    assert _count(served, UNGUARDED) == 0
    assert _count(served, GUARDED) == _count(OHIF_DIST, GUARDED) + unguarded_in_npm_dist
    # Nothing else changed in the patched chunk but those two expressions.
    chunk = next(OHIF_DIST.glob("7431.bundle.*.js")).name
    before, after = (OHIF_DIST / chunk).read_text(), (served / chunk).read_text()
    assert after == before.replace(UNGUARDED, GUARDED)
