"""Per-series cache of WADO-RS ``/series/{uid}/metadata`` answers.

Orthanc 1.10 with DICOMweb 1.7 re-reads every file of the series for each call (0.15-0.3 s for 300
instances; the plugin's own cache arrives only in 1.15, ohif-integration §7.3), and OHIF asks for every
series of a study on each open. The cache keeps Orthanc's answer per series, in this process:

- evicted by :func:`invalidate_series` when a series changes (the STOW side calls it after storing a SEG/SR);
- refreshed by the gateway when the database records more instances of the series than the entry holds
  (:attr:`CachedMetadata.instances`): the catalogue for ingested series, the annotation versions for a task's
  SEG/SR series. Ingest, and a second web process, write from other processes, so a late slice or another
  worker's save is seen at the next metadata request, not after ``ttl_s``;
- bounded in bytes (least recently used out) and in age (``ttl_s``), so that a change made by another
  process (a second web worker, ingest) is seen after at most ``ttl_s``;
- race-free against invalidation: an answer fetched while the series was invalidated is not stored
  (generation counter).

Entries hold Orthanc's JSON with Orthanc's BulkDataURIs; the gateway rewrites them per request (the public
base can differ between requests) and keeps the rewritten, gzipped variant next to it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_TTL_S = 600.0


@dataclass
class CachedMetadata:
    """Orthanc's answer for one series, and renderings of it for the public bases seen so far."""

    body: bytes
    fetched_at: float
    renderings: dict[str, tuple[bytes, bytes | None]] = field(default_factory=dict)
    instances: int = field(init=False)

    def __post_init__(self) -> None:
        # Each instance's object has one SOP Instance UID key; a bytes count, no parse.
        self.instances = self.body.count(b'"00080018"')

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(p) + len(g or b"") for p, g in self.renderings.values())


class SeriesMetadataCache:
    """Thread-safe LRU of series metadata, keyed by (Study Instance UID, Series Instance UID)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, str], CachedMetadata] = OrderedDict()
        self._generations: dict[tuple[str, str], int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def generation(self, study_instance_uid: str, series_instance_uid: str) -> int:
        """Take this before fetching; pass it to :meth:`put` so a concurrent invalidation wins."""
        with self._lock:
            return self._generations.get((study_instance_uid, series_instance_uid), 0)

    def get(self, study_instance_uid: str, series_instance_uid: str) -> CachedMetadata | None:
        key = (study_instance_uid, series_instance_uid)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry.fetched_at > self.ttl_s:
                self._drop(key)
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, study_instance_uid: str, series_instance_uid: str, body: bytes, generation: int) -> CachedMetadata:
        """Store Orthanc's answer unless the series was invalidated since ``generation`` was taken."""
        key = (study_instance_uid, series_instance_uid)
        entry = CachedMetadata(body=body, fetched_at=time.monotonic())
        with self._lock:
            if self._generations.get(key, 0) != generation or len(body) > self.max_bytes:
                return entry
            self._drop(key)
            self._entries[key] = entry
            self._bytes += entry.size
            self._evict()
        return entry

    def add_rendering(self, entry: CachedMetadata, base: str, plain: bytes, gzipped: bytes | None) -> None:
        with self._lock:
            before = entry.size
            # A handful of public bases at most (one per host name the gateway is reached by).
            if len(entry.renderings) >= 4:
                entry.renderings.clear()
            entry.renderings[base] = (plain, gzipped)
            if any(e is entry for e in self._entries.values()):
                self._bytes += entry.size - before
                self._evict()

    def invalidate_series(self, study_instance_uid: str, series_instance_uid: str) -> None:
        key = (study_instance_uid, series_instance_uid)
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            self._drop(key)

    def invalidate_study(self, study_instance_uid: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == study_instance_uid]:
                self._generations[key] = self._generations.get(key, 0) + 1
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._generations[key] = self._generations.get(key, 0) + 1
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size


def compact_json(body: bytes) -> bytes:
    """Orthanc's pretty-printed JSON without its indentation and line breaks, byte-exact otherwise.

    Safe without parsing: JSON strings cannot hold a raw tab or line break (they are escaped), so every such
    byte is layout. A 300-instance series' metadata shrinks by a third in about a millisecond, where a parse
    and re-dump took ~70 ms of the cold metadata request."""
    return body.translate(None, b"\n\r\t")


# The process-wide cache: the gateway reads it, the STOW side and ingest invalidate it.
SERIES_METADATA_CACHE = SeriesMetadataCache()


def invalidate_series(study_instance_uid: str, series_instance_uid: str) -> None:
    """Forget the cached metadata of one series (call after storing anything into it)."""
    SERIES_METADATA_CACHE.invalidate_series(study_instance_uid, series_instance_uid)


def invalidate_study(study_instance_uid: str) -> None:
    """Forget the cached metadata of every series of one study."""
    SERIES_METADATA_CACHE.invalidate_study(study_instance_uid)
