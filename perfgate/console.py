"""Live progress on the terminal: a table that updates in place on a TTY, plain lines otherwise.

Everything goes to stderr so that ``--json`` keeps stdout machine-readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from perfgate.models import StepStats


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


class Progress:
    """Renders pipeline events (see ``perfgate.pipeline``) as they arrive."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.steps: list[tuple[str, StepStats]] = []
        self.current: dict[str, Any] = {}
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

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "step":
            step: StepStats = event["step"]
            self.steps.append((event.get("build", "candidate"), step))
            self.current = {}
            if not self.live:
                self._line(self._step_line(event.get("build", "candidate"), step))
        elif kind == "tick":
            self.current = event
        elif kind == "stage":
            text = {
                "staging": f"provisioning staging ({event.get('provider')})",
                "load": f"ramping users against {event.get('target')}",
                "analysis": "analysing",
                "report": "writing the report",
            }.get(event.get("stage", ""), str(event.get("stage")))
            self._log(text)
        elif kind == "replicate" and (event.get("of", 1) > 1 or event.get("build") != "candidate"):
            self._log(f"replicate {event['index']}/{event['of']}: {event.get('build')}")
        elif kind == "step_started":
            self.current = {"users": event.get("users"), "phase": event.get("phase")}
            if self._slo_ms is None and event.get("slo_p95_ms"):
                self._slo_ms = event["slo_p95_ms"]
        elif kind == "log":
            self._log(str(event.get("message", "")))
        if self._live is not None:
            self._live.update(self._table())

    # -- rendering -----------------------------------------------------------------------------

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:6.1f}s"

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _log(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(f"[dim]{self._elapsed()}[/dim] {text}", highlight=False)
        else:
            self._line(f"{self._elapsed()} {text}")

    def _step_line(self, build: str, s: StepStats) -> str:
        mark = "ok  " if s.slo_ok else "FAIL"
        who = "" if build == "candidate" else f"[{build}] "
        why = "" if s.slo_ok else f"  ({s.slo_reason})"
        return (
            f"{self._elapsed()} {who}{mark} users {s.users:>5}  {s.throughput_rps:8.1f} req/s  "
            f"p50 {_ms(s.p50_ms):>6}  p95 {_ms(s.p95_ms):>6}  p99 {_ms(s.p99_ms):>6} ms  "
            f"errors {s.error_rate:6.2%}{why}"
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
                "[green]ok[/green]" if s.slo_ok else f"[red]{s.slo_reason or 'broken'}[/red]",
            )
        cur = self.current
        if cur.get("users"):
            table.add_row(
                "…",
                str(cur.get("users")),
                f"{cur.get('throughput_rps') or 0:,.1f}"
                if cur.get("throughput_rps") is not None
                else "",
                "",
                _ms(cur.get("p95_ms")),
                "",
                "",
                f"[dim]measuring {cur.get('phase') or ''}[/dim]",
            )
        return table
