"""`pfsxport report plot`: one picture of a task from its report.h5, four panels.

Owns matplotlib (an optional extra: `pip install 'pfsxport[plot]'`; the only module that
imports it, lazily). `panel_data` computes what each panel shows from the report's columns
(pure numpy), `draw` only draws it, so what a picture says can be checked without pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .report import read_columns

COLUMNS = ("path", "type", "size", "status", "error_code", "bytes", "rank", "start", "end")
SENT = ("succeeded", "succeeded with warning")


@dataclass
class PanelData:
    title: str
    t: np.ndarray  # seconds since the first row began: the left edge of each time bin
    mb_per_s: np.ndarray
    entries_per_s: np.ndarray
    ranks: np.ndarray
    rank_entries: np.ndarray
    rank_mb: np.ndarray
    size_edges: np.ndarray  # bytes: 0, then powers of two (bin i holds sizes in [edge i, edge i+1))
    size_counts: np.ndarray  # files sent per size bin
    failures: dict[str, int]


def panel_data(cols: dict, bins: int = 60) -> PanelData:
    """What the four panels show: throughput over time (MB/s, entries/s; an entry's bytes count
    where it ended), entries and MB per rank, the sizes of the files sent, failures by code."""
    status, end = cols["status"], cols["end"].astype(float)
    done = np.isin(status, SENT) | (status == "failed")
    t0 = float(cols["start"].min()) if len(end) else 0.0
    span = max(float(end.max()) - t0, 1e-3) if len(end) else 1.0
    width = span / bins
    edges = t0 + width * np.arange(bins + 1)
    nbytes = cols["bytes"].astype(float)
    by_time_bytes, _ = np.histogram(end[done], edges, weights=nbytes[done])
    by_time_entries, _ = np.histogram(end[done], edges)
    ranks = np.unique(cols["rank"]) if len(end) else np.array([0])
    rank_entries = np.array([int(((cols["rank"] == r) & done).sum()) for r in ranks])
    rank_mb = np.array([float(nbytes[(cols["rank"] == r) & done].sum()) / 1e6 for r in ranks])
    files = (cols["type"] == "file") & np.isin(status, SENT)
    sizes = cols["size"][files].astype(float)
    top = int(np.ceil(np.log2(max(float(sizes.max()) if len(sizes) else 1.0, 1.0) + 1))) + 1
    size_edges = np.concatenate([[0.0], 2.0 ** np.arange(0, max(top, 1))])
    size_counts, _ = np.histogram(sizes, size_edges)
    codes, counts = np.unique(cols["error_code"][status == "failed"], return_counts=True)
    a = cols.get("attrs", {})
    title = f"{a.get('TaskId', '')} {a.get('Lifecycle', '')}  ({len(end)} entries, {len(ranks)} rank(s))".strip()
    return PanelData(title, edges[:-1] - t0, by_time_bytes / width / 1e6, by_time_entries / width, ranks,
                     rank_entries, rank_mb, size_edges, size_counts, {str(c): int(n) for c, n in zip(codes, counts,
                                                                                                  strict=True)})


def draw(d: PanelData, out: str, width_px: int = 1600, height_px: int = 1000, dpi: int = 100) -> None:
    """Write the picture (PNG or SVG by `out`'s suffix) of `width_px` x `height_px`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    fig.suptitle(d.title)
    a = ax[0][0]
    a.plot(d.t, d.mb_per_s, color="tab:blue")
    a.set_xlabel("seconds")
    a.set_ylabel("MB/s", color="tab:blue")
    a2 = a.twinx()
    a2.plot(d.t, d.entries_per_s, color="tab:orange")
    a2.set_ylabel("entries/s", color="tab:orange")
    a.set_title("throughput")
    b = ax[0][1]
    x = np.arange(len(d.ranks))
    b.bar(x - 0.2, d.rank_entries, 0.4, label="entries", color="tab:orange")
    b.set_ylabel("entries")
    b2 = b.twinx()
    b2.bar(x + 0.2, d.rank_mb, 0.4, label="MB", color="tab:blue")
    b2.set_ylabel("MB")
    b.set_xticks(x, [str(r) for r in d.ranks])
    b.set_xlabel("rank")
    b.set_title("entries (left) and MB (right) per rank")
    c = ax[1][0]
    labels = [_size(e) for e in d.size_edges[:-1]]  # each bin from its lower edge: [4 KiB, 8 KiB) is "4 KiB"
    c.bar(np.arange(len(d.size_counts)), d.size_counts, color="tab:green")
    c.set_xticks(np.arange(len(labels)), labels, rotation=60, fontsize=7)
    c.set_xlabel("file size from")
    c.set_ylabel("files sent")
    c.set_title("sizes of the files sent")
    f = ax[1][1]
    if d.failures:
        f.barh(list(d.failures), list(d.failures.values()), color="tab:red")
    else:
        f.text(0.5, 0.5, "no failures", ha="center", va="center", transform=f.transAxes)
    f.set_xlabel("entries")
    f.set_title("failures by error code")
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def plot(report_h5: str, out: str, width_px: int = 1600, height_px: int = 1000) -> PanelData:
    d = panel_data(read_columns(report_h5, COLUMNS))
    draw(d, out, width_px, height_px)
    return d


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} PiB"
