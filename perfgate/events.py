"""Progress events: what the load runner and the pipeline report while a gate runs.

Typed records instead of ``{"event": "...", ...}`` dicts, so a sink (the console, a test, a
caller's dashboard) matches on the class and mypy checks every field it reads. They are shared
data like :mod:`perfgate.models`: any stage may emit them, only the console renders them.

Who emits what:

- :class:`perfgate.load.LocustRunner`: :class:`StepStarted`, :class:`Tick` (once a second while
  users run) and :class:`StepDone` for every ``measure`` and ``hold``;
- the pipeline: :class:`StageChanged`, :class:`StepMeasured` (a level recorded for a build),
  :class:`Replicate`, :class:`Log`, and for the side-by-side gate :class:`Window` (one short
  alternating measurement window) and :class:`Look` (one planned look of the sequential decision).

A sink is called on the thread that does the work; an exception it raises (e.g.
KeyboardInterrupt) propagates into the measurement, which then stops the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from perfgate.models import LookRecord, StepStats, WindowStats

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class StepStarted:
    """The runner sent one load level to the engine (``step`` None and phase "hold" for a hold)."""

    step: int | None
    phase: str
    users: int
    record: bool
    settle_s: float
    min_s: float
    max_s: float
    min_samples: int
    slo_p95_ms: float
    slo_error_rate: float


@dataclass(**_FROZEN)
class Tick:
    """The engine's last second; ``step``/``phase`` None for ticks that arrived between steps."""

    t_s: float | None
    users: int | None
    throughput_rps: float
    p95_ms: float | None  # None without a successful request in that second
    failures: int
    error_rate: float
    cpu_percent: float | None
    recording: bool
    step: int | None
    phase: str | None
    elapsed_s: float  # since the step (or hold) began


@dataclass(**_FROZEN)
class StepDone:
    """The engine finished a level; ``stats`` None for a hold (nothing recorded)."""

    step: int | None
    phase: str
    users: int
    stats: StepStats | None


@dataclass(**_FROZEN)
class StageChanged:
    """The pipeline entered a stage ("staging", "load", "analysis", "report").

    ``detail`` is what the stage works on: the provider for staging, the (redacted) target URL
    for load, empty otherwise.
    """

    stage: str
    detail: str = ""


@dataclass(**_FROZEN)
class StepMeasured:
    """The pipeline recorded one level for ``build`` ("candidate" or "baseline")."""

    step: StepStats
    build: str = "candidate"


@dataclass(**_FROZEN)
class Replicate:
    """Replicate ``index`` of ``of`` (1-based) of ``build`` begins."""

    index: int
    of: int
    build: str


@dataclass(**_FROZEN)
class Log:
    """A one-line message for the operator."""

    message: str


@dataclass(**_FROZEN)
class Window:
    """One short alternating measurement window of the side-by-side gate (``index`` 1-based)."""

    build: str
    index: int
    users: int
    throughput_rps: float
    p95_ms: float | None  # None without a successful request in the window


@dataclass(**_FROZEN)
class Look:
    """One planned look of the sequential decision, after ``pairs`` pairs of windows.

    ``verdict`` is the decision's state at this look, as the pipeline names it; ``ratio`` is
    the candidate / baseline ratio the decision judges, with its confidence interval ``ratio_ci``;
    both None while there is not enough data for one.
    """

    index: int
    pairs: int
    verdict: str
    ratio: float | None
    ratio_ci: tuple[float, float] | None
    elapsed_s: float


def window_event(w: WindowStats) -> Window:
    """The progress event of one side-by-side window (the gate's record, for the console)."""
    return Window(
        build=w.build, index=w.pair, users=w.users, throughput_rps=w.goodput_rps, p95_ms=w.p95_ms
    )


def look_event(look: LookRecord) -> Look:
    """The progress event of one planned look."""
    return Look(
        index=look.index,
        pairs=look.pairs,
        verdict=look.outcome,
        ratio=look.ratio,
        ratio_ci=(look.ratio_lo, look.ratio_hi),
        elapsed_s=look.elapsed_s,
    )


Event: TypeAlias = (
    StepStarted | Tick | StepDone | StageChanged | StepMeasured | Replicate | Log | Window | Look
)
EventSink: TypeAlias = Callable[[Event], None]

EVENT_TYPES: tuple[type, ...] = (
    StepStarted,
    Tick,
    StepDone,
    StageChanged,
    StepMeasured,
    Replicate,
    Log,
    Window,
    Look,
)

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventSink",
    "Log",
    "Look",
    "Replicate",
    "StageChanged",
    "StepDone",
    "StepMeasured",
    "StepStarted",
    "Tick",
    "Window",
    "look_event",
    "window_event",
]
