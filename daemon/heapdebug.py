"""Opt-in heap tracing for the leak hunt: ``PIRAG_TRACEMALLOC=N`` (frames kept per allocation) turns it on.

With it set, the daemon starts ``tracemalloc`` before anything else is built and, every
``PIRAG_TRACEMALLOC_EVERY_S`` seconds (default 60) from the server's tick, writes to
``<state_dir>/tracemalloc.txt`` what grew since the first snapshot taken after start-up: the top lines by size
difference, grouped by the allocating file and line (``PIRAG_TRACEMALLOC_GROUP=traceback`` groups by whole
stacks instead). Python allocations only: llama.cpp and Chroma's Rust side are invisible to it, so the report
also gives the process RSS next to the traced total, and the gap is what native code holds.

Tracing costs CPU (a few tens of percent; far more with deep stacks) and memory, and each snapshot blocks
the event loop while it is taken (seconds on a loaded machine): never on in production. A leaf module.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

from .metrics import rss_bytes

ENV = "PIRAG_TRACEMALLOC"
TOP_LINES = 40


class HeapTracer:
    """Snapshots at a fixed period, compared with the baseline, written over one report file."""

    def __init__(self, frames: int, out: Path, every_s: float, group_by: str):
        self.out = out
        self.every_s = every_s
        self.group_by = group_by if group_by in ("lineno", "filename", "traceback") else "lineno"
        self.baseline: tracemalloc.Snapshot | None = None
        self.baseline_rss = 0
        self.baseline_at = 0.0
        self.last = 0.0
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)

    def _snapshot(self) -> tracemalloc.Snapshot:
        # tracemalloc's own bookkeeping and the import machinery are noise for a leak hunt
        return tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        ))

    def tick(self, now: float) -> None:
        """Called from the server's tick; cheap except when a snapshot is due."""
        if now - self.last < self.every_s:
            return
        self.last = now
        if self.baseline is None:
            self.baseline, self.baseline_rss, self.baseline_at = self._snapshot(), rss_bytes(), now
            return
        self.write(now)

    def write(self, now: float) -> None:
        assert self.baseline is not None
        snapshot = self._snapshot()
        stats = snapshot.compare_to(self.baseline, self.group_by)
        traced, peak = tracemalloc.get_traced_memory()
        rss = rss_bytes()
        lines = [f"# pirag heap growth over {now - self.baseline_at:.0f} s (pid {os.getpid()}, "
                 f"{time.strftime('%Y-%m-%dT%H:%M:%S')})",
                 f"# traced {traced / 1e6:.1f} MB (peak {peak / 1e6:.1f}); RSS {rss / 1e6:.1f} MB, "
                 f"{(rss - self.baseline_rss) / 1e6:+.1f} MB since the baseline; traced growth "
                 f"{sum(s.size_diff for s in stats) / 1e6:+.1f} MB", ""]
        for stat in stats[:TOP_LINES]:
            frame = stat.traceback[0]
            lines.append(f"{stat.size_diff / 1e3:+10.1f} kB {stat.count_diff:+8d} blocks  "
                         f"{stat.size / 1e3:10.1f} kB now  {frame.filename}:{frame.lineno}")
            if self.group_by == "traceback":
                lines.extend(f"        {line}" for line in stat.traceback.format()[-12:])
        temporary = self.out.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        temporary.replace(self.out)


def from_env(state_dir: Path) -> HeapTracer | None:
    """A tracer when ``PIRAG_TRACEMALLOC`` is a positive frame count, else None (the normal case)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        return None
    every = float(os.environ.get(f"{ENV}_EVERY_S", "60") or 60)
    return HeapTracer(int(raw), state_dir / "tracemalloc.txt", max(1.0, every),
                      os.environ.get(f"{ENV}_GROUP", "lineno"))
