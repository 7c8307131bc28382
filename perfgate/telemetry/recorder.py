"""Samples every source on a background thread while the load runs; summarises any window.

The recorder never fails a run: a source that cannot be measured is skipped, and every window
says what was not measured and why (``StepResources.missing``). A source that keeps failing is
asked less often (every :data:`BACKOFF_S`), so an absent Prometheus costs the run nothing.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from perfgate.models import StepResources
from perfgate.telemetry.base import Sampler, Summary, Unavailable

SAMPLE_S = 0.5  # between two snapshots of one source
BACKOFF_S = 5.0  # between attempts at a source that failed twice in a row
HISTORY = 2400  # snapshots kept per source (20 minutes at SAMPLE_S)
EDGE_WAIT_S = 0.25  # a window's edge waits this long at most for a sampling pass under way


class _Source:
    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.snaps: collections.deque[tuple[float, Any]] = collections.deque(maxlen=HISTORY)
        self.error = ""
        self.failures = 0
        self.next_t = 0.0


class Recorder:
    """Snapshots of each :class:`Sampler`, taken every ``interval_s`` until :meth:`stop`."""

    def __init__(
        self,
        samplers: Sequence[Sampler],
        *,
        interval_s: float = SAMPLE_S,
        missing: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = [_Source(s) for s in samplers]
        self.interval_s = interval_s
        self.missing = tuple(missing)  # known before any sample (no source for this staging)
        self.clock = clock
        self._lock = threading.Lock()  # the snapshots
        self._io_lock = threading.Lock()  # one sampling pass at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Recorder:
        if self.sources and self._thread is None:
            self.sample_now()
            self._thread = threading.Thread(target=self._loop, name="telemetry", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_now()

    def sample_now(self, *, healthy_only: bool = False) -> None:
        """One snapshot of every source that is due.

        The window's edge calls it with ``healthy_only``: only the sources that answered last
        time, and not at all while the thread is busy with a slow one, so a source that hangs
        never delays the load. Sources are asked one at a time (their clients are not shared
        between threads); the snapshots' lock is held only to store them.
        """
        if not self._io_lock.acquire(timeout=EDGE_WAIT_S if healthy_only else -1):
            return
        try:
            for src in self.sources:
                if self.clock() < src.next_t or (healthy_only and src.failures):
                    continue
                self._ask(src)
        finally:
            self._io_lock.release()

    def _ask(self, src: _Source) -> None:
        try:
            snap = src.sampler.sample()
        except Unavailable as exc:
            src.error, src.failures = str(exc), src.failures + 1
            src.next_t = self.clock() + (BACKOFF_S if src.failures >= 2 else 0.0)
            return
        except Exception as exc:  # a source's bug must not cost the verdict
            src.error = f"{src.sampler.label}: {type(exc).__name__}: {exc}"
            src.failures += 1
            src.next_t = self.clock() + BACKOFF_S
            return
        src.failures, src.next_t = 0, 0.0
        with self._lock:
            src.snaps.append((self.clock(), snap))

    def window(self, t0: float, t1: float) -> StepResources:
        """What the sources measured between ``t0`` and ``t1`` (this recorder's clock)."""
        parts: list[Summary] = []
        missing = list(self.missing)
        with self._lock:
            # enough around the window to interpolate counters at its edges, no more
            margin = 2 * self.interval_s + (t1 - t0) / 4
            for src in self.sources:
                snaps = [(t, s) for t, s in src.snaps if t0 - margin <= t <= t1 + margin]
                if not snaps:
                    missing.append(src.error or f"{src.sampler.label}: no sample in this window")
                    continue
                parts.append(src.sampler.summarise(snaps, t0, t1))
        cores = [p.cpu_cores for p in parts if p.cpu_cores is not None]
        return StepResources(
            readings=tuple(r for p in parts for r in p.readings),
            cpu_cores=sum(cores) if cores else None,
            events=tuple(e for p in parts for e in p.events),
            missing=tuple(dict.fromkeys(m for p in parts for m in p.missing).keys())
            + tuple(dict.fromkeys(missing)),
        )
