"""The report's event section (``users.streams``): event latency and the event backlog against
users (charts), and one table row per step (:func:`event_rows`, for index.html and summary.md).

Charts are drawn next to the request charts with :mod:`perfgate.report.charts`' helpers (style, SVG
cleaning, the saturation mark), the baseline release's curves dashed over this run's, so a
release whose events fall behind while its requests stay fast shows it at a glance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from matplotlib.axes import Axes

from perfgate import fmt
from perfgate.models import StepStats
from perfgate.report import charts as c

# (heading, key) of the event table's columns, shared by index.html and summary.md
EVENT_COLUMNS = (
    ("Users", "users"),
    ("Request p95 ms", "request_p95"),
    ("Events", "expected"),
    ("Lost", "lost"),
    ("Event p50 ms", "p50"),
    ("Event p95 ms", "p95"),
    ("Event p99 ms", "p99"),
    ("Backlog", "backlog"),
    ("Read lag p95 ms", "read_lag"),
    ("Stream errors", "stream_errors"),
    ("Event SLO", "slo"),
)


def event_rows(steps: Sequence[StepStats]) -> list[dict[str, str]]:
    """One row per step that awaited events (load order), the request p95 beside the event's."""
    rows = []
    for s in steps:
        e = s.events
        if e is None:
            continue
        event_fail = _event_failed(s)
        rows.append(
            {
                "users": str(s.users),
                "request_p95": fmt.ms(s.p95_ms),
                "expected": str(e.expected),
                "lost": f"{e.lost} ({fmt.rate(e.loss_rate)})" if e.lost else "0",
                "p50": fmt.ms(e.p50_ms),
                "p95": fmt.ms(e.p95_ms),
                "p99": fmt.ms(e.p99_ms),
                "backlog": f"{e.backlog_mean:.1f}",
                "read_lag": fmt.ms(e.read_lag_p95_ms),
                "stream_errors": str(e.stream_errors),
                "slo": "FAIL" if event_fail else "ok",
            }
        )
    return rows


def _event(value: str) -> Callable[[StepStats], float | None]:
    def get(s: StepStats) -> float | None:
        return None if s.events is None else getattr(s.events, value)

    return get


def _event_failed(s: StepStats) -> bool:
    return not s.slo_ok and s.events is not None and "event" in s.slo_reason


def event_charts(run: c.RunCurves) -> list[c.Chart]:
    """Event latency and backlog against users; none when no step awaited events."""
    if not any(s.events is not None and s.events.expected for s in run.steps):
        return []
    slo = run.slo.event_p95_ms
    label = "Event latency p50, p95, p99 (ms) against users" + (
        f"; SLO event p95 {slo:g} ms" if slo is not None else ""
    )
    return [
        c.Chart(
            key="event-latency",
            title="Event latency",
            caption=(
                "From sending a request to receiving its event on the user's WebSocket, next to "
                "the request p95: events that fall behind while requests stay fast part here."
            ),
            svg=c._panel(run, _draw_event_latency, 3.5, "evl", label),
        ),
        c.Chart(
            key="event-backlog",
            title="Event backlog",
            caption=(
                "Events awaited at any moment (mean over the window): a backlog that grows with "
                "users is an event path past its capacity. Lost events are marked in red."
            ),
            svg=c._panel(run, _draw_backlog, 3.0, "evb", "Awaited events against users"),
        ),
    ]


def _draw_event_latency(ax: Axes, run: c.RunCurves) -> None:
    steps = run.steps
    by = c._baseline_curve(ax, run, lambda ss: c._levels(ss, _event("p95_ms")), " event p95")
    x50, y50 = c._levels(steps, _event("p50_ms"))
    x95, y95 = c._levels(steps, _event("p95_ms"))
    x99, y99 = c._levels(steps, _event("p99_ms"))
    xr, yr = c._levels(steps, lambda s: s.p95_ms)
    ax.plot(x99, y99, color=c.P99, lw=1.1, label="event p99")
    ax.plot(x95, y95, color=c.CURRENT, marker="o", ms=c._dot(x95), label="event p95")
    ax.plot(x50, y50, color=c.P50, lw=1.3, label="event p50")
    ax.plot(xr, yr, color="#059669", lw=1.1, ls=":", label="request p95")
    failed = [s for s in run.failing if _event_failed(s)]
    fx, fy = c._points(failed, _event("p95_ms"))
    if fx:
        c._marks(ax, fx, fy, "X", color=c.SLO, label="event SLO failed", ms=c._cross(fx))
    slo = run.slo.event_p95_ms
    if slo is not None:
        c._slo_line(ax, slo, f"SLO event p95 {slo:g} ms")
    c._mark_saturation(ax, run.saturation, with_label=False)
    top = max([*(y95 or [1.0]), *by, *yr, (slo or 0.0) * 1.5]) * 1.12
    if y99 and max(y99) > top:
        ax.set_ylim(0, top)  # p99 may run far above: clip it, do not squash the p95
    else:
        ax.set_ylim(bottom=0)
    c._users_axis(ax)
    ax.set_ylabel("latency (ms)")
    ax.set_title("Event latency against users")


def _draw_backlog(ax: Axes, run: c.RunCurves) -> None:
    c._baseline_curve(ax, run, lambda ss: c._levels(ss, _event("backlog_mean")), " backlog")
    x, y = c._levels(run.steps, _event("backlog_mean"))
    ax.plot(x, y, color=c.CURRENT, marker="o", ms=c._dot(x), label="awaited events")
    lossy = [s for s in run.steps if s.events is not None and s.events.lost]
    lx, ly = c._points(lossy, _event("backlog_mean"))
    if lx:
        c._marks(ax, lx, ly, "X", color=c.SLO, label="events lost", ms=c._cross(lx))
    c._mark_saturation(ax, run.saturation, with_label=False)
    c._users_axis(ax)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("events awaited")
    ax.set_title("Event backlog against users")
