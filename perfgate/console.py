"""Live progress on the terminal: a table that updates in place on a TTY, plain lines otherwise.

Everything goes to stderr so that ``--json`` keeps stdout machine-readable. Events are the typed
records of :mod:`perfgate.events`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from perfgate import fmt
from perfgate.events import (
    Event,
    Log,
    Look,
    Replicate,
    StageChanged,
    StepDone,
    StepMeasured,
    StepStarted,
    Tick,
    Window,
)
from perfgate.models import StepStats

_STAGES = {
    "staging": "provisioning staging ({detail})",
    "load": "ramping users against {detail}",
    "analysis": "analysing",
    "report": "writing the report",
}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Current:
    """The level being measured right now: the table's last, in-progress row."""

    users: int | None = None
    phase: str | None = None
    throughput_rps: float | None = None
    p95_ms: float | None = None


def window_line(w: Window) -> str:
    """One alternating measurement window of the side-by-side gate, as one line."""
    return (
        f"window {w.index:>3} {w.build:<9} users {w.users:>5}  {w.throughput_rps:8.1f} req/s  "
        f"p95 {_ms(w.p95_ms):>6} ms"
    )


def look_line(look: Look) -> str:
    """One look of the sequential decision, as one line."""
    ratio = "-" if look.ratio is None else f"{look.ratio:.3f}"
    if look.ratio_ci is not None:
        ratio += f" [{look.ratio_ci[0]:.3f}, {look.ratio_ci[1]:.3f}]"
    return (
        f"look {look.index}: {look.pairs} pairs  ratio {ratio}  → {look.verdict}  "
        f"({look.elapsed_s:.0f} s)"
    )


class Progress:
    """Renders pipeline and load events (:mod:`perfgate.events`) as they arrive."""

    def __init__(
        self, stream: TextIO | None = None, *, live: bool | None = None, quiet: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet  # --quiet: events are recorded but nothing is drawn
        self.live = False if quiet else self.stream.isatty() if live is None else live
        self.steps: list[tuple[str, StepStats]] = []
        self.current = Current()
        self.t0 = time.monotonic()
        self._live: Any = None
        self._slo_ms: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._table(),
                console=Console(file=self.stream),
                refresh_per_second=4,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    # -- events --------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        self._handle(event)
        if self._live is not None:
            self._live.update(self._table())

    def _handle(self, event: Event) -> None:
        match event:
            case StepMeasured(step=step, build=build):
                self.steps.append((build, step))
                self.current = Current()
                if not self.live:
                    self._line(self._step_line(build, step))
            case Tick():
                self.current = Current(
                    users=event.users,
                    phase=event.phase,
                    throughput_rps=event.throughput_rps,
                    p95_ms=event.p95_ms,
                )
            case StageChanged(stage=stage, detail=detail):
                template = _STAGES.get(stage)
                self._log(template.format(detail=detail) if template else stage)
            case Replicate(index=index, of=of, build=build) if of > 1 or build != "candidate":
                self._log(f"replicate {index}/{of}: {build}")
            case StepStarted(users=users, phase=phase):
                self.current = Current(users=users, phase=phase)
                if self._slo_ms is None and event.slo_p95_ms:
                    self._slo_ms = event.slo_p95_ms
            case Log(message=message):
                self._log(message)
            case Window():
                self._log(window_line(event))
            case Look():
                self._log(look_line(event))
            case StepDone():
                pass  # the pipeline's StepMeasured carries the level's row

    # -- rendering -----------------------------------------------------------------------------

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:6.1f}s"

    def _line(self, text: str) -> None:
        if not self.quiet:
            print(fmt.printable(text), file=self.stream, flush=True)

    def _log(self, text: str) -> None:
        if self._live is not None:
            shown = _markup(text)
            self._live.console.print(f"[dim]{self._elapsed()}[/dim] {shown}", highlight=False)
        else:
            self._line(f"{self._elapsed()} {text}")

    def _step_line(self, build: str, s: StepStats) -> str:
        mark = "ok  " if s.slo_ok else "FAIL"
        who = "" if build == "candidate" else f"[{build}] "
        why = "" if s.slo_ok else f"  ({s.slo_reason})"
        ev = s.events
        events = "" if ev is None else f"  events p95 {_ms(ev.p95_ms):>6} ms lost {ev.lost}"
        return (
            f"{self._elapsed()} {who}{mark} users {s.users:>5}  {s.throughput_rps:8.1f} req/s  "
            f"p50 {_ms(s.p50_ms):>6}  p95 {_ms(s.p95_ms):>6}  p99 {_ms(s.p99_ms):>6} ms  "
            f"errors {s.error_rate:6.2%}{events}{why}"
        )

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="perfgate ramp", title_justify="left", expand=False)
        for col in ("", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "SLO"):
            table.add_column(col, justify="right")
        for build, s in self.steps[-25:]:
            table.add_row(
                "" if build == "candidate" else build[:4],
                str(s.users),
                f"{s.throughput_rps:,.1f}",
                _ms(s.p50_ms),
                _ms(s.p95_ms),
                _ms(s.p99_ms),
                f"{s.error_rate:.2%}",
                "[green]ok[/green]"
                if s.slo_ok
                else f"[red]{_markup(s.slo_reason or 'broken')}[/red]",
            )
        cur = self.current
        if cur.users:
            table.add_row(
                "…",
                str(cur.users),
                "" if cur.throughput_rps is None else f"{cur.throughput_rps:,.1f}",
                "",
                _ms(cur.p95_ms),
                "",
                "",
                f"[dim]measuring {cur.phase or ''}[/dim]",
            )
        return table


def _markup(text: str) -> str:
    """Data (request names, errors) for rich: neither markup nor terminal control."""
    from rich.markup import escape

    return escape(fmt.printable(text))
