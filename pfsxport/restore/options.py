"""What an import is asked to do on each rank: `FetchOptions` (local, no MPI)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FetchOptions:
    concurrency: int = 64  # objects in flight per rank
    ranges_in_flight: int = 8  # ranged GETs of large objects in flight per rank
    range_size: int = 16 << 20  # objects above this come down as ranged GETs of this size
    attempts: int = 3  # fetches of an object whose ETag keeps moving before it fails
    metadata_only: bool = False  # files created empty with their owner, mode and times
    no_overwrite: bool = False  # an entry already in the target is kept
    lfs: str | None = None  # `lfs` to create large files with (Lustre), None: plain files
    setstripe: str = "auto"  # lfs setstripe options for large files; "auto": sized to the file (stripe_options)
    setstripe_min: int = 64 << 20  # files at least this large are created with `lfs setstripe`
