"""The "Why it broke" charts: each measured resource against users, with its limit, the SLO
boundary and the baseline release's curve overlaid; the shares of the saturated resource.

Drawn with :mod:`perfgate.report.charts`' helpers (style, SVG cleaning), so the report keeps one
look; matplotlib objects are only handled through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from matplotlib.axes import Axes

from perfgate import fmt
from perfgate.models import ResourceReading, RunResult, StepStats
from perfgate.readings import by_series, series
from perfgate.report import charts as c
from perfgate.report.common import sorted_steps

MAX_CHARTS = 12  # resource panels per report (the saturated one first, then by fullness)
REQUEST_COLOR = "#0891b2"  # a container's request, drawn where it has no limit
SHARE_COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2")


def _readings(steps: Sequence[StepStats]) -> dict[str, list[tuple[int, ResourceReading]]]:
    """Each series' readings by level; the baseline's are looked up by the same series name
    (perfgate.readings: a Kubernetes series is its workload's, whatever its pods were called)."""
    out: dict[str, list[tuple[int, ResourceReading]]] = {}
    for s in steps:
        for name, r in by_series(s.resources).items():
            out.setdefault(name, []).append((s.users, r))
    return out


def _first(steps: Sequence[StepStats], resource: str | None) -> str | None:
    """The series of the bottleneck's resource (an old result.json named it by its pod)."""
    return next(
        (series(r) for s in steps if s.resources for r in s.resources.readings
         if r.name == resource),
        resource,
    )  # fmt: skip


def _order(curves: dict[str, list[tuple[int, ResourceReading]]], first: str | None) -> list[str]:
    """The saturated resource first, then resources with a limit by peak use, then the rest."""

    def key(name: str) -> tuple[int, float, str]:
        peak = max((r.utilisation or 0.0) for _, r in curves[name])
        has_limit = any(r.limit is not None for _, r in curves[name])
        return (0 if name == first else 1 if has_limit else 2, -peak, name)

    return sorted((n for n in curves if curves[n][0][1].kind != "share"), key=key)


def resource_charts(result: RunResult) -> list[c.Chart]:
    """The measured resources against users (small multiples, one figure), and the shares of
    the saturated resource."""
    steps = sorted_steps(result.steps)
    curves = _readings(steps)
    if not curves:
        return []
    base = _readings(sorted_steps(result.baseline_steps))
    b = result.bottleneck
    first = _first(steps, b.resource if b is not None else None)
    names = _order(curves, first)[:MAX_CHARTS]
    out = []
    if names:
        out.append(
            c.Chart(
                key="resources",
                title="Resources against users",
                caption=(
                    "Each measured resource of the system under test, with its limit (red, "
                    "dashed) where it has one, else a container's request (cyan, dotted: not "
                    "a limit), the SLO boundary (amber) and the baseline's curve (grey, "
                    "dashed) when it was measured. A Kubernetes workload with several "
                    "replicas is drawn as its busiest replica at each level."
                ),
                svg=_grid(result, names, curves, base, first),
            )
        )
    shares = _shares(curves, first)
    if shares:
        out.append(shares)
    return out


def _grid(
    result: RunResult,
    names: list[str],
    curves: dict[str, list[tuple[int, ResourceReading]]],
    base: dict[str, list[tuple[int, ResourceReading]]],
    first: str | None,
) -> str:
    cols = 2 if len(names) > 1 else 1
    rows = -(-len(names) // cols)
    with c._style():
        fig = c._new_fig(6.4 * cols / 1.6 + 1.0, 2.3 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, name in enumerate(names):
            ax = axes[i // cols][i % cols]
            pts = curves[name]
            unit = pts[0][1].unit
            limit = next((r.limit for _, r in reversed(pts) if r.limit is not None), None)
            request = next((r.request for _, r in reversed(pts) if r.request), None)
            request = request if limit is None else None  # a limit is what it is judged by
            _draw(ax, result, pts, base.get(name, []), (limit, request), unit)
            title = name + (
                f" (limit {fmt.quantity(limit, unit)})"
                if limit is not None
                else f" (no limit, request {fmt.quantity(request, unit)})"
                if request is not None
                else ""
            )
            ax.set_title(c._label(title + (" — saturated first" if name == first else ""), 64))
        for j in range(len(names), rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8)
        return c._to_svg(fig, "resources", "Resources of the system under test against users")


def _panel(draw: Callable[[Axes], None], svg_id: str, label: str) -> str:
    with c._style():
        fig = c._new_fig(6.4, 2.8)
        ax = fig.add_subplot()
        draw(ax)
        c._legend_below(ax)
        return c._to_svg(fig, svg_id, label)


def _draw(
    ax: Axes,
    result: RunResult,
    pts: list[tuple[int, ResourceReading]],
    base: list[tuple[int, ResourceReading]],
    lines: tuple[float | None, float | None],  # its limit, or its request when it has none
    unit: str,
) -> None:
    if base and result.baseline is not None:
        bx, by = [float(u) for u, _ in base], [r.value for _, r in base]
        ax.plot(
            bx,
            by,
            color=c.BASELINE,
            ls="--",
            lw=1.3,
            label=c._label(f"baseline {result.baseline.release}"),
        )
    x, y = [float(u) for u, _ in pts], [r.value for _, r in pts]
    ax.plot(x, y, color=c.CURRENT, marker="o", ms=c._dot(x), label=c._label(result.release))
    limit, request = lines
    if limit is not None:
        ax.axhline(limit, color=c.SLO, ls="--", lw=1.2, label="limit")
    if request is not None:
        ax.axhline(request, color=REQUEST_COLOR, ls=":", lw=1.2, label="request (not a limit)")
    c._mark_saturation(ax, result.saturation, with_label=True)
    ax.set_ylabel(unit or "value")
    ax.set_ylim(bottom=0)
    c._users_axis(ax)


def _shares(curves: dict[str, list[tuple[int, ResourceReading]]], of: str | None) -> c.Chart | None:
    parts = {
        n: p
        for n, p in curves.items()
        if p[0][1].kind == "share" and (of is None or p[0][1].of == of)
    }
    if not parts:
        return None
    whole = next(iter(parts.values()))[0][1].of

    def draw(ax: Axes) -> None:
        for i, (name, pts) in enumerate(sorted(parts.items(), key=lambda kv: -kv[1][-1][1].value)):
            x, y = [float(u) for u, _ in pts], [r.value * 100 for _, r in pts]
            color = SHARE_COLORS[i % len(SHARE_COLORS)]
            ax.plot(
                x,
                y,
                color=color,
                marker="o",
                ms=c._dot(x),
                label=c._label(name.removeprefix("slot time of ")),
            )
        ax.set_ylabel(f"% of the {whole}")
        ax.set_ylim(0, 100)
        c._users_axis(ax)

    return c.Chart(
        key="shares",
        title=f"What used the {whole}",
        caption="Each route's share of it, and the order-book rebuild's.",
        svg=_panel(draw, "shares", f"Shares of the {whole} against virtual users"),
    )
