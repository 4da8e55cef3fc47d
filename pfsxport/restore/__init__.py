"""The import data path of one rank, one module per concern: `target` (the target tree walked
safely, component by component with O_NOFOLLOW, and the sweep of temporary files), `write`
(one object's GETs, bytes and metadata, under a temporary name until it is whole), `importer`
(the queue, the rows, the manifest's lines and the directories' metadata), `options`.

Local: threads, no MPI (the task, importjob, hands each rank its share of the key space).
Nothing is ever written outside the target and a torn file never appears under its final name.
"""
from __future__ import annotations

from .importer import Importer
from .options import FetchOptions
from .target import TMP_PREFIX

__all__ = ["TMP_PREFIX", "FetchOptions", "Importer"]
