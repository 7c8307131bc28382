"""The report's charts: matplotlib figures rendered to lean, inline-ready SVG strings.

This is the only module that imports matplotlib. It uses the object-oriented ``Figure`` API and
never pyplot, so no GUI backend or global figure state is involved. Each chart comes back as an
``<svg>`` element without XML header, with a role and aria-label, its ids prefixed so several
SVGs can share one page, and fonts left to the page's CSS.
"""

from __future__ import annotations

import io
import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from html import escape
from typing import Any, cast

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from perfgate import fmt
from perfgate.models import BaselineRef, HistoryRow, Saturation, Slo, StepStats, TimelinePoint
from perfgate.steps import CPU_LIMIT_PERCENT

CURRENT = "#2563eb"
P50 = "#93c5fd"
P99 = "#1e3a8a"
BASELINE = "#6b7280"
SLO = "#dc2626"
SAT = "#d97706"
LIMITED = "#7c3aed"
GRID = "#e5e7eb"

_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: small, searchable, escaped by matplotlib
    "svg.hashsalt": "perfgate",  # deterministic ids (they are prefixed per chart afterwards)
    "text.parse_math": False,  # a '$' in a request name must not start mathtext
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titlelocation": "left",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#374151",
    "axes.titlecolor": "#111827",
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.6,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.6,
    "lines.markersize": 3.5,
    "path.simplify": True,
}

_META = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _style(overrides: dict[str, Any] | None = None) -> AbstractContextManager[None]:
    """The report's matplotlib settings, for one chart (rcParams are restored afterwards)."""
    return matplotlib.rc_context(cast(Any, {**_RC, **(overrides or {})}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """One rendered chart: an id for anchors, a title, the inline SVG and a caption."""

    key: str
    title: str
    svg: str
    caption: str = ""


# ---------------------------------------------------------------------------------------------
# SVG post-processing
# ---------------------------------------------------------------------------------------------

_REF = re.compile(r'(href="#|url\(#)([^")]+)')
_ID = re.compile(r' id="([^"]+)"')
_NUM_ATTR = re.compile(r' (d|x|y|x1|x2|y1|y2|width|height|transform|points)="([^"]*)"')
_LONG_DECIMAL = re.compile(r"(\d*\.\d\d)\d+")


def _to_svg(fig: Figure, key: str, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_META)
    return clean_svg(buf.getvalue(), key, label)


def clean_svg(raw: str, key: str, label: str) -> str:
    """Make matplotlib's SVG inline-ready: no header, unique ids, lean, labelled for a11y."""
    s = raw[raw.index("<svg") :]
    s = re.sub(r"<!--.*?-->", "", s, flags=re.S)
    s = re.sub(r"<metadata>.*?</metadata>", "", s, flags=re.S)
    # matplotlib's '*{stroke-linejoin…}' rule would style the whole page; the page CSS has it.
    s = re.sub(r"<style[^>]*>.*?</style>", "", s, flags=re.S)
    s = re.sub(r"\s*\n\s*", " ", s)
    s = re.sub(r">\s+<", "><", s)
    s = re.sub(r"<defs>\s*</defs>", "", s)
    s = re.sub(r"font-family: [^;\"]*;? ?", "", s)  # the page's CSS picks the font
    s = re.sub(r' transform="rotate\(-?0 [^)"]*\)"', "", s)
    s = _NUM_ATTR.sub(lambda m: " " + m[1] + '="' + _LONG_DECIMAL.sub(r"\1", m[2]) + '"', s)
    referenced = {m[2] for m in _REF.finditer(s)}
    s = _ID.sub(lambda m: f' id="{key}-{m[1]}"' if m[1] in referenced else "", s)
    s = _REF.sub(lambda m: f"{m[1]}{key}-{m[2]}", s)
    # Responsive: drop the fixed size, keep the viewBox; CSS sets width: 100%.
    head_end = s.index(">")
    head = re.sub(r' (width|height)="[^"]*"', "", s[:head_end])
    head += f' role="img" aria-label="{escape(label, quote=True)}" class="chart-svg"'
    return head + f"><title>{escape(label, quote=False)}</title>" + s[head_end + 1 :]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _label(text: str, limit: int = 60) -> str:
    """A single-line label; matplotlib hides legend labels starting with '_'."""
    s = " ".join(text.split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s if not s.startswith("_") else "\u200b" + s


def _levels(
    steps: Iterable[StepStats], value: Callable[[StepStats], float | None]
) -> tuple[list[float], list[float]]:
    """Median of ``value`` per load level, so replicated levels draw one line, not a zigzag."""
    by_users: dict[int, list[float]] = {}
    for s in steps:
        v = value(s)
        if v is not None and v == v:
            by_users.setdefault(s.users, []).append(v)
    xs = sorted(by_users)
    return [float(x) for x in xs], [statistics.median(by_users[x]) for x in xs]


def _points(
    steps: Iterable[StepStats], value: Callable[[StepStats], float | None]
) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s in steps:
        v = value(s)
        if v is not None and v == v:
            xs.append(float(s.users))
            ys.append(v)
    return xs, ys


def _dot(xs: Sequence[Any]) -> float:
    """Marker size for a curve of len(xs) points: dense ramps get small dots, not a bead chain."""
    return 3.5 if len(xs) <= 30 else 2.2 if len(xs) <= 60 else 1.4


def _cross(xs: Sequence[Any]) -> float:
    return 6.0 if len(xs) <= 30 else 4.0


def _new_fig(width_in: float, height_in: float, **kwargs: Any) -> Figure:
    return Figure(figsize=(width_in, height_in), layout="constrained", **kwargs)


def _mark_saturation(ax: Axes, sat: Saturation, *, with_label: bool) -> None:
    if sat.users is None or not sat.broken:
        return
    lo_hi = sat.users_ci or (tuple(float(u) for u in sat.bracket) if sat.bracket else None)
    if lo_hi is not None:
        band = "95 % CI" if sat.users_ci else "bracket"
        ax.axvspan(
            lo_hi[0],
            lo_hi[1],
            color=SAT,
            alpha=0.14,
            lw=0,
            label=f"saturation {band}" if with_label else None,
        )
    ax.axvline(
        sat.users,
        color=SAT,
        lw=1.2,
        ls="-",
        label=f"saturation {fmt.saturation_users(sat)} users" if with_label else None,
    )


def _mark_knee(ax: Axes, knee_users: float | None) -> None:
    if knee_users is not None:
        ax.axvline(knee_users, color="#9ca3af", lw=1, ls=":", label=f"knee ≈ {knee_users:.3g}")


def _legend(ax: Axes, **kwargs: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, **kwargs)


def _legend_below(ax: Axes) -> None:
    """Legend under the plot, so it never hides a curve (constrained layout makes room)."""
    _legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3, fontsize=8.5)


def _users_axis(ax: Axes) -> None:
    ax.set_xlabel("virtual users")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.set_xlim(left=0)


# ---------------------------------------------------------------------------------------------
# Charts against users
# ---------------------------------------------------------------------------------------------

# A curve from steps: (x values, y values).
Series = Callable[[Sequence[StepStats]], tuple[list[float], list[float]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCurves:
    """What the charts against users draw: this run's steps, SLO and saturation, its baseline's."""

    steps: Sequence[StepStats]
    slo: Slo
    saturation: Saturation
    baseline_steps: Sequence[StepStats] = ()
    baseline: BaselineRef | None = None
    knee_users: float | None = None

    @property
    def failing(self) -> list[StepStats]:
        return [s for s in self.steps if not s.slo_ok]


def users_charts(run: RunCurves) -> list[Chart]:
    """Throughput, latency, latency against throughput and errors, each with the baseline's."""
    lat_label = f"Latency p50, p95, p99 (ms) against users; SLO p95 {run.slo.p95_ms:g} ms"
    # (key, title, caption) of each chart, and (how to draw it, height in inches, SVG id prefix,
    # accessible label) of its one axes.
    return [
        Chart(
            key="throughput",
            title="Throughput",
            caption="Throughput flattens at the knee; the SLO boundary is marked in amber.",
            svg=_panel(
                run, _draw_throughput, 3.5, "thr", "Throughput (req/s) against virtual users"
            ),
        ),
        Chart(
            key="latency",
            title="Latency",
            caption="Red crosses are steps that broke the SLO (p95 or error rate).",
            svg=_panel(run, _draw_latency, 3.5, "lat", lat_label),
        ),
        Chart(
            key="latency-throughput",
            title="Latency against throughput",
            caption="Past the knee extra users add only queueing: the curve turns upward.",
            svg=_panel(
                run,
                _draw_latency_throughput,
                3.0,
                "lxt",
                "p95 latency (ms) against throughput (req/s)",
            ),
        ),
        Chart(
            key="errors",
            title="Error rate",
            svg=_panel(run, _draw_errors, 3.0, "err", "Error rate (%) against users"),
        ),
    ]


def _panel(
    run: RunCurves,
    draw: Callable[[Axes, RunCurves], None],
    height_in: float,
    svg_id: str,
    label: str,
) -> str:
    """One axes, as wide as the page's column, drawn by ``draw``, its legend below: the SVG."""
    with _style():
        fig = _new_fig(6.4, height_in)
        ax = fig.add_subplot()
        draw(ax, run)
        _legend_below(ax)
        return _to_svg(fig, svg_id, label)


def _baseline_curve(ax: Axes, run: RunCurves, series: Series, suffix: str = "") -> list[float]:
    """The baseline's curve, dashed grey, when there is one; its y values."""
    if not run.baseline_steps or run.baseline is None:
        return []
    bx, by = series(run.baseline_steps)
    label = _label(f"baseline {run.baseline.release}{suffix}")
    ax.plot(bx, by, color=BASELINE, ls="--", lw=1.3, label=label)
    return by


def _slo_failed(ax: Axes, points: tuple[list[float], list[float]]) -> None:
    """The steps that broke the SLO, as red crosses."""
    fx, fy = points
    if fx:
        _marks(ax, fx, fy, "X", color=SLO, label="SLO failed", ms=_cross(fx))


def _run_curves(
    ax: Axes, run: RunCurves, curve: Series, failed: Series, *, label: str
) -> tuple[list[float], list[float]]:
    """The baseline's curve, this run's over it and its SLO-failing steps; this run's points."""
    _baseline_curve(ax, run, curve)
    x, y = curve(run.steps)
    ax.plot(x, y, color=CURRENT, marker="o", ms=_dot(x), label=label)
    _slo_failed(ax, failed(run.failing))
    return x, y


def _against_users(
    ax: Axes, run: RunCurves, value: Callable[[StepStats], float | None], *, label: str
) -> tuple[list[float], list[float]]:
    """:func:`_run_curves` of ``value``: its median per load level, each failing step's own."""
    return _run_curves(
        ax, run, lambda ss: _levels(ss, value), lambda ss: _points(ss, value), label=label
    )


def _marks(ax: Axes, x: Sequence[float], y: Sequence[float], marker: str, **style: Any) -> None:
    """Points without a line between them."""
    ax.plot(x, y, ls="none", marker=marker, **style)


def _slo_line(ax: Axes, value: float, label: str) -> None:
    ax.axhline(value, color=SLO, ls="--", lw=1.2, label=label)


def _throughput(s: StepStats) -> float:
    return s.throughput_rps


def _draw_throughput(ax: Axes, run: RunCurves) -> None:
    """Throughput against users, with the saturation point, its interval and the baseline."""
    saturation = run.saturation
    x, _ = _against_users(ax, run, _throughput, label="this run")
    lx, ly = _points([s for s in run.steps if s.generator and s.generator.limited], _throughput)
    if lx:
        _marks(ax, lx, ly, "s", color=LIMITED, label="generator-limited", ms=8, mfc="none")
    _mark_saturation(ax, saturation, with_label=True)
    _mark_knee(ax, run.knee_users)
    _mark_saturation_points(ax, saturation, run.baseline)
    if not saturation.broken and x:
        ax.annotate(
            "SLO held up to the highest level",
            xy=(0.99, 0.03),
            xycoords="axes fraction",
            ha="right",
            color="#374151",
            fontsize=8,
        )
    _users_axis(ax)
    ax.set_ylabel("throughput (req/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against users")


def _mark_saturation_points(ax: Axes, saturation: Saturation, baseline: BaselineRef | None) -> None:
    """This run's saturation point with its error bars, and the baseline's as a hollow diamond."""
    if saturation.broken and saturation.users is not None and saturation.throughput_rps:
        xerr = _err(saturation.users, saturation.users_ci)
        yerr = _err(saturation.throughput_rps, saturation.throughput_ci)
        ax.errorbar(
            [saturation.users],
            [saturation.throughput_rps],
            xerr=xerr,
            yerr=yerr,
            fmt="D",
            ms=6,
            color=SAT,
            mec="white",
            capsize=3,
            zorder=5,
        )
    if baseline is not None and baseline.saturation.users and baseline.saturation.throughput_rps:
        xy = ([baseline.saturation.users], [baseline.saturation.throughput_rps])
        _marks(ax, *xy, "D", color=BASELINE, label="baseline saturation", ms=6, mfc="white")


def _err(center: float, ci: tuple[float, float] | None) -> list[list[float]] | None:
    if ci is None:
        return None
    return [[max(0.0, center - ci[0])], [max(0.0, ci[1] - center)]]


def _draw_latency(ax: Axes, run: RunCurves) -> None:
    """p50/p95/p99 against users with the SLO line, failing steps and the baseline's p95."""
    steps, slo_p95_ms = run.steps, run.slo.p95_ms
    top = max([slo_p95_ms * 1.5, *_baseline_curve(ax, run, _p95_levels, " p95")])
    x50, y50 = _levels(steps, lambda s: s.p50_ms)
    x95, y95 = _p95_levels(steps)
    x99, y99 = _levels(steps, lambda s: s.p99_ms)
    ax.plot(x99, y99, color=P99, lw=1.1, label="p99")
    ax.plot(x95, y95, color=CURRENT, marker="o", ms=_dot(x95), label="p95")
    ax.plot(x50, y50, color=P50, lw=1.3, label="p50")
    top = max([top, *y95]) * 1.12
    _slo_failed(ax, _points(run.failing, lambda s: s.p95_ms))
    _slo_line(ax, slo_p95_ms, f"SLO p95 {slo_p95_ms:g} ms")
    _mark_saturation(ax, run.saturation, with_label=False)
    _mark_knee(ax, run.knee_users)
    # p99 can run far above the SLO; clip it rather than squash the p95 curve flat.
    if y99 and max(y99) > top:
        ax.set_ylim(0, top)
        ax.annotate(
            f"p99 off scale (max {max(y99):.0f} ms)",
            xy=(0.01, 0.97),
            xycoords="axes fraction",
            va="top",
            fontsize=8,
            color=P99,
        )
    else:
        ax.set_ylim(bottom=0)
    _users_axis(ax)
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency against users")


def _p95_levels(steps: Sequence[StepStats]) -> tuple[list[float], list[float]]:
    return _levels(steps, lambda s: s.p95_ms)


def _error_percent(s: StepStats) -> float:
    return s.error_rate * 100


def _draw_errors(ax: Axes, run: RunCurves) -> None:
    """Error rate (%) against users with the SLO's error budget."""
    budget = run.slo.error_rate * 100
    _, y = _against_users(ax, run, _error_percent, label="error rate")
    _slo_line(ax, budget, f"SLO errors {budget:g} %")
    _mark_saturation(ax, run.saturation, with_label=False)
    _users_axis(ax)
    ax.set_ylim(0, max([budget * 1.6, *(v * 1.12 for v in y)]) or 1.0)
    ax.set_ylabel("errors (%)")
    ax.set_title("Error rate against users")


def _curve(steps: Sequence[StepStats]) -> tuple[list[float], list[float]]:
    """(throughput, p95) in load order, steps without a p95 left out."""
    pairs = [
        (s.throughput_rps, s.p95_ms)
        for s in sorted(steps, key=lambda s: (s.users, s.index))
        if s.p95_ms is not None
    ]
    return [a for a, _ in pairs], [b for _, b in pairs]


def _draw_latency_throughput(ax: Axes, run: RunCurves) -> None:
    """p95 against throughput: the hockey stick; the SLO boundary sits where it turns up."""
    saturation, slo_p95_ms = run.saturation, run.slo.p95_ms
    _run_curves(ax, run, _curve, _curve, label="this run")
    _slo_line(ax, slo_p95_ms, f"SLO p95 {slo_p95_ms:g} ms")
    if saturation.broken and saturation.throughput_rps:
        ax.axvline(
            saturation.throughput_rps,
            color=SAT,
            lw=1.2,
            label=f"{saturation.throughput_rps:.4g} req/s at the SLO",
        )
    ax.set_xlim(left=0)  # a vertical wall at the plateau is the finding, not noise to zoom into
    ax.set_ylim(bottom=0)
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("p95 (ms)")
    ax.set_title("Latency against throughput")


# ---------------------------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------------------------


def timeline_chart(
    timeline: Sequence[TimelinePoint], steps: Sequence[StepStats], *, slo_p95_ms: float
) -> Chart:
    """Users, throughput and p95 over time; measuring windows shaded (the rest is settle)."""
    with _style():
        fig = _new_fig(12.0, 5.2)
        axes = fig.subplots(3, 1, sharex=True, height_ratios=(1, 1.2, 1.2))
        windows = [(s.started_s, s.duration_s) for s in steps if s.duration_s > 0]
        for ax in axes:
            if windows:
                ax.broken_barh(
                    windows,
                    (0, 1),
                    transform=ax.get_xaxis_transform(),
                    color="#dbeafe",
                    alpha=0.55,
                    lw=0,
                )
        if timeline:
            t = [p.t_s for p in timeline]
            axes[0].step(t, [p.users for p in timeline], where="post", color="#374151", lw=1.2)
            axes[1].plot(t, [p.throughput_rps for p in timeline], color=CURRENT, lw=1.1)
            tp = [(p.t_s, p.p95_ms) for p in timeline if p.p95_ms is not None]
            axes[2].plot([a for a, _ in tp], [b for _, b in tp], color=P99, lw=1.1)
            source = "1-s samples"
        else:
            mid = [s.started_s + s.duration_s / 2 for s in steps]
            axes[0].plot(mid, [s.users for s in steps], "o", color="#374151")
            axes[1].plot(mid, [s.throughput_rps for s in steps], "o", color=CURRENT)
            tp = [(m, s.p95_ms) for m, s in zip(mid, steps, strict=True) if s.p95_ms is not None]
            axes[2].plot([a for a, _ in tp], [b for _, b in tp], "o", color=P99)
            source = "per step (no timeline recorded)"
        axes[2].axhline(slo_p95_ms, color=SLO, ls="--", lw=1.1, label=f"SLO p95 {slo_p95_ms:g} ms")
        axes[0].set_ylabel("users")
        axes[1].set_ylabel("req/s")
        axes[2].set_ylabel("p95 (ms)")
        for ax in axes:
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        axes[2].set_xlabel("time since start (s)")
        _legend(axes[2], loc="upper left")
        svg = _to_svg(fig, "tl", "Timeline: users, throughput and p95 latency over time")
    return Chart(
        key="timeline",
        title="Timeline",
        svg=svg,
        caption=f"Plotted from {source}; shaded = measured windows, unshaded gaps are settle "
        "periods that were not measured. Look for "
        "warm-up at the start, stalls (dips to zero) and lag after each step change.",
    )


# ---------------------------------------------------------------------------------------------
# Per endpoint
# ---------------------------------------------------------------------------------------------


def endpoint_chart(
    steps: Sequence[StepStats],
    endpoints: Sequence[tuple[str, str]],
    *,
    slo_p95_ms: float,
    baseline_steps: Sequence[StepStats] = (),
    first: tuple[str, str] | None = None,
) -> Chart:
    """Small multiples: p95 against users per endpoint (method, name), with the SLO line."""
    n = len(endpoints)
    ncols = 3 if n > 4 else max(1, min(n, 2))
    nrows = -(-n // ncols)
    with _style({"axes.titlesize": 8.5, "font.size": 8}):
        fig = _new_fig(12.0, 0.5 + 2.3 * nrows)
        axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
        for i, key in enumerate(endpoints):
            ax = axes[i // ncols][i % ncols]

            def p95(s: StepStats, key: tuple[str, str] = key) -> float | None:
                for e in s.endpoints:
                    if (e.method, e.name) == key:
                        return e.p95_ms
                return None

            if baseline_steps:
                bx, by = _levels(baseline_steps, p95)
                if bx:
                    ax.plot(bx, by, color=BASELINE, ls="--", lw=1.1, label="baseline")
            x, y = _levels(steps, p95)
            color = SLO if key == first else CURRENT
            ax.plot(x, y, color=color, marker="o", ms=_dot(x) * 0.7, lw=1.3, label="this run")
            ax.axhline(slo_p95_ms, color=SLO, ls="--", lw=0.9)
            over = [(a, b) for a, b in zip(x, y, strict=True) if b > slo_p95_ms]
            if over:
                ax.plot([over[0][0]], [over[0][1]], "X", ms=6, color=SLO)
            ax.set_ylim(0, max([slo_p95_ms * 1.3, *y]) * 1.08)
            ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
            title = _label(f"{key[0]} {key[1]}", 40) + (
                "  (first to degrade)" if key == first else ""
            )
            ax.set_title(title, color=SLO if key == first else "#111827")
            if i % ncols == 0:
                ax.set_ylabel("p95 (ms)")
            if i // ncols == nrows - 1 or i + ncols >= n:
                ax.set_xlabel("users")
                ax.xaxis.set_tick_params(labelbottom=True)
            if i == 0 and baseline_steps:
                _legend(ax, loc="upper left")
        for j in range(n, nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        svg = _to_svg(fig, "ep", f"p95 latency against users for {n} request types")
    return Chart(
        key="endpoints",
        title="p95 per request type",
        svg=svg,
        caption=f"Dashed red line: SLO p95 {slo_p95_ms:g} ms. A cross marks where a "
        "request type first crossed it.",
    )


# ---------------------------------------------------------------------------------------------
# Generator health
# ---------------------------------------------------------------------------------------------


def generator_chart(
    steps: Sequence[StepStats], *, cpu_limit_percent: float = CPU_LIMIT_PERCENT
) -> Chart | None:
    """Generator CPU and Little's-law ratio against users (None when no step recorded health).

    The red line is the threshold the load stage judges steps by (``steps.CPU_LIMIT_PERCENT``),
    so a step drawn above it is one that was flagged as generator-limited for its CPU.
    """
    with_health = [s for s in steps if s.generator is not None]
    if not with_health:
        return None
    with _style():
        fig = _new_fig(12.0, 3.0)
        ax_cpu, ax_little = fig.subplots(1, 2, sharex=True)
        x, cpu = _levels(with_health, lambda s: s.generator.cpu_percent if s.generator else None)
        ax_cpu.plot(x, cpu, color=CURRENT, marker="o", ms=2.5)
        ax_cpu.axhline(
            cpu_limit_percent,
            color=SLO,
            ls="--",
            lw=1,
            label=f"limit {cpu_limit_percent:g} % of a core",
        )
        ax_cpu.set_ylim(0, max([100.0, *cpu]) * 1.05)
        ax_cpu.set_ylabel("CPU (% of one core)")
        ax_cpu.set_title("Generator CPU (busiest process)")
        _legend(ax_cpu, loc="lower right")
        lx, lr = _levels(with_health, lambda s: s.generator.little_ratio if s.generator else None)
        ax_little.plot(lx, lr, color=P99, marker="o", ms=2.5)
        ax_little.axhline(1.0, color="#9ca3af", ls=":", lw=1)
        ax_little.set_ylim(0, max([1.2, *lr]) * 1.05)
        ax_little.set_ylabel("X·R / N")
        ax_little.set_title("Little's law: throughput × latency / users")
        lim = [s.users for s in with_health if s.generator and s.generator.limited]
        for ax in (ax_cpu, ax_little):
            _users_axis(ax)
            if lim:  # one collection, not a line per step
                ax.vlines(
                    lim, 0, 1, transform=ax.get_xaxis_transform(), color=LIMITED, alpha=0.35, lw=2
                )
        svg = _to_svg(fig, "gen", "Load generator CPU and Little's-law ratio against users")
    return Chart(
        key="generator",
        title="Generator health",
        svg=svg,
        caption=(
            "Purple bars: steps where the generator, not the target, was the limit."
            if lim
            else "Below the red line and on the dotted line at 1: the generator kept up."
        ),
    )


# ---------------------------------------------------------------------------------------------
# History across releases
# ---------------------------------------------------------------------------------------------


def _sat(r: HistoryRow) -> Saturation:
    return Saturation(
        users=r.users,
        throughput_rps=r.throughput_rps,
        broken=r.censored != "above_max",
        reason="",
        users_ci=r.users_ci,
        throughput_ci=r.throughput_ci,
        censored=r.censored,  # type: ignore[arg-type]
    )


def _history_points(
    ax: Axes, entries: list[tuple[str, Saturation, bool]], attr: str, ci_attr: str, color: str
) -> None:
    """The line through the releases and their points with intervals (▲: never broke)."""
    xs = list(range(len(entries)))
    ys = [getattr(e[1], attr) for e in entries]
    valid = [(i, y) for i, y in zip(xs, ys, strict=True) if y is not None]
    ax.plot([i for i, _ in valid], [y for _, y in valid], color=BASELINE, lw=1, zorder=1)
    # One errorbar call per marker style (past/current × broke/never broke), not per point.
    groups: dict[tuple[bool, bool], tuple[list[int], list[float], list[float], list[float]]] = {}
    for i, (_, sat, current) in enumerate(entries):
        y = getattr(sat, attr)
        if y is None:
            continue
        ci = getattr(sat, ci_attr) or (y, y)
        censored = not sat.broken or sat.censored == "above_max"
        gx, gy, lo, hi = groups.setdefault((current, censored), ([], [], [], []))
        gx.append(i)
        gy.append(y)
        lo.append(max(0.0, y - ci[0]))
        hi.append(max(0.0, ci[1] - y))
    for (current, censored), (gx, gy, lo, hi) in groups.items():
        ax.errorbar(
            gx,
            gy,
            yerr=[lo, hi],
            fmt="^" if censored else "o",
            ms=7 if current else 5,
            color=color if current else "#374151",
            capsize=2,
            zorder=3,
        )


def history_chart(
    rows: Sequence[HistoryRow],
    *,
    current: tuple[str, Saturation] | None = None,
    min_users: int | None = None,
    reference: str | None = None,
    current_color: str = CURRENT,
) -> Chart:
    """Saturation users and throughput at the SLO across releases (with their intervals), a
    dashed line before each change point, and each release's level against the reference
    (the marked one, else the first): the cumulative change since then."""
    entries: list[tuple[str, Saturation, bool]] = [(r.release, _sat(r), False) for r in rows]
    if current is not None:
        entries.append((f"{current[0]} (this run)", current[1], True))
    labels = [_label(e[0], 24) for e in entries]
    ref = next((r for r in rows if r.release == reference), rows[0] if rows else None)
    with _style():
        fig = _new_fig(12.0, 3.4)
        ax_u, ax_x = fig.subplots(1, 2, sharex=True)
        for ax, attr, ci_attr, ylabel in (
            (ax_u, "users", "users_ci", "saturation (users)"),
            (ax_x, "throughput_rps", "throughput_ci", "req/s at the SLO"),
        ):
            _history_points(ax, entries, attr, ci_attr, current_color)
            marks = [i - 0.5 for i, r in enumerate(rows) if r.change_point]
            for k, x in enumerate(marks):
                ax.axvline(x, color=SAT, ls="--", lw=1, label="change point" if k == 0 else None)
            if attr == "users" and min_users:
                ax.axhline(min_users, color=SLO, ls="--", lw=1, label=f"floor {min_users} users")
            if marks or (attr == "users" and min_users):
                _legend(ax, loc="lower left")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.15)  # room for the level labels
            many = len(entries) > 4
            ax.set_xticks(
                range(len(entries)),
                labels,
                rotation=30 if many else 0,
                ha="right" if many else "center",
            )
            ax.grid(axis="x", visible=False)
        if ref is not None and len(rows) <= 24:
            for i, r in enumerate(rows):
                if r.throughput_rps is not None:
                    change = fmt.percent(100 * math.expm1(r.level_log - ref.level_log))
                    ax_x.annotate(
                        change,
                        (i, r.throughput_rps),
                        textcoords="offset points",
                        xytext=(0, 8),
                        ha="center",
                        fontsize=7,
                        color=BASELINE,
                    )
        ax_u.set_title("Saturation point by release (▲ = never broke)")
        ax_x.set_title(
            "Throughput at the SLO"
            + (f" (labels: level vs {_label(ref.release, 16)})" if ref is not None else "")
        )
        svg = _to_svg(fig, "hist", "Saturation point of this scenario across releases")
    return Chart(
        key="history",
        title="History",
        svg=svg,
        caption="Releases oldest first (dashed: a change point before the release).",
    )
