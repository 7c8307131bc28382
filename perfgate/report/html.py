"""index.html: one self-contained page (inline CSS and SVG, no scripts) rendered with jinja2.

Autoescaping is on for everything; the only markup inserted unescaped is the SVG that
:mod:`perfgate.report.charts` produced from matplotlib (which escapes every text it draws).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from perfgate import fmt
from perfgate.models import BaselineRef, Fingerprint, History, RunResult, StepStats
from perfgate.report import charts, tables
from perfgate.report.common import (
    DEGRADED_FIRST_KEY,
    FirstDegraded,
    comparison_text,
    deciding_rule,
    duration_s,
    first_degraded,
    sorted_steps,
    verdict_class,
    verdict_word,
)
from perfgate.report.events import EVENT_COLUMNS, event_charts, event_rows
from perfgate.report.resource_charts import resource_charts
from perfgate.report.why import why
from perfgate.steps import EVENT_READ_LAG_LIMIT_MS

_TEMPLATES = Path(__file__).parent / "templates"
VERDICT_COLORS = {
    "pass": "#15803d",
    "block": "#b91c1c",
    "inconclusive": "#b45309",
    "aborted": "#4b5563",
    "ramp": "#1d4ed8",
}
MAX_ENDPOINT_CHARTS = 12
MAX_HISTORY = 30  # releases drawn in the history chart (the newest)

DIAGNOSTIC_MEANINGS = {
    "little": (
        "Little's law check",
        "In a closed test users = throughput × mean latency; a gap means time was lost inside "
        "the load generator, not the target.",
    ),
    "usl": (
        "Universal Scalability Law fit",
        "Throughput against users fitted with contention (σ) and coherency (κ); N_max is where "
        "throughput would peak.",
    ),
    "kneedle": (
        "Kneedle knee",
        "Where the throughput curve bends most: queueing starts there, which is below the "
        "SLO break.",
    ),
    "knee": (
        "Closed-system knee",
        "N* ≈ latency at one user × peak throughput; beyond it latency grows linearly with users.",
    ),
    "gate_ratio": (
        "Gate ratio",
        "This run's throughput at the SLO divided by the baseline's (95 % CI in brackets).",
    ),
}

FINGERPRINT_LABELS = {
    "scenario_hash": "scenario (content hash)",
    "slo": "SLO",
    "perfgate_version": "perfgate version",
    "cpu_count": "CPUs",
    "provider": "staging provider",
    "target": "target",
    "python": "Python",
    "machine": "machine",
}
_MUST_MATCH = ("scenario_hash", "slo")


@dataclass(frozen=True, slots=True, kw_only=True)
class _EndpointRow:
    method: str
    name: str
    share: str
    p95_first: str
    p95_last_ok: str
    p95_last: str
    growth: str
    crossed_at: str
    max_error: str
    first: bool


def render_html(result: RunResult, *, history: History | None = None) -> str:
    """Render index.html for ``result`` (history: the scenario's release history table)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("index.html.j2")
    return template.render(**_context(result, history))


def _context(result: RunResult, history: History | None) -> dict[str, Any]:
    """The template's variables: the headline numbers, the charts, then the detail tables."""
    steps = sorted_steps(result.steps)
    base = result.baseline
    first = first_degraded(result)
    endpoint_keys = _endpoint_keys(steps)
    return {
        **_headline(result),
        **_chart_context(result, history, steps, first, endpoint_keys),
        "endpoint_more": max(0, len(endpoint_keys) - MAX_ENDPOINT_CHARTS),
        "first": first.text if first else "",
        "first_crossed": bool(first and first.users is not None),
        "other_reasons": _other_reasons(result),
        "endpoint_rows": _endpoint_rows(steps, endpoint_keys, result, first),
        "endpoint_matrix": _endpoint_matrix(steps, endpoint_keys, result.slo.p95_ms),
        "endpoint_keys": endpoint_keys,
        "diagnostics": _diagnostics(result.diagnostics),
        "generator_rows": _generator_rows(steps),
        "generator_info": [(k, _plain(v)) for k, v in result.generator.items()],
        "staging_info": _staging_info(result.diagnostics.get("staging")),
        "fingerprint": _fingerprint_rows(result.fingerprint, base.fingerprint if base else None),
        "fingerprint_note": _comparability_note(result, base),
        **_tables(steps),
        "steps": [_step_row(s) for s in steps],
        "has_generator": any(s.generator for s in steps),
        **_event_context(result, steps),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "why": why(result),
        "resource_charts": [_svg(c) for c in resource_charts(result)],
        "fmt_ms": fmt.ms,
        "fmt_rps": fmt.rps,
        "fmt_rate": fmt.rate,
    }


def _headline(result: RunResult) -> dict[str, Any]:
    """The banner: verdict, rules with their numbers, saturation against the baseline, the SLO."""
    sat, base = result.saturation, result.baseline
    word = verdict_word(result)
    return {
        "r": result,
        "word": word,
        "vclass": verdict_class(result),
        "title": f"perfgate · {result.scenario} · {result.release} · {word}",
        "duration": _duration_text(duration_s(result)),
        "decided": deciding_rule(result),
        "compared": comparison_text(result),
        "started": _when(result.started_at),
        "rules": [
            {
                "name": rule.name,
                "outcome": rule.outcome,
                "message": rule.message,
                "value": fmt.value(rule.value),
                "threshold": fmt.value(rule.threshold),
                "margin": fmt.margin(rule.margin),
                "margin_sign": "" if rule.margin is None else ("neg" if rule.margin < 0 else "pos"),
            }
            for rule in result.rules
        ],
        "sat": {
            "users": fmt.saturation_users(sat),
            "users_ci": fmt.interval(sat.users_ci),
            "rps": fmt.rps(sat.throughput_rps),
            "rps_ci": fmt.interval(sat.throughput_ci, fmt.rps),
            "bracket": f"{sat.bracket[0]}–{sat.bracket[1]}" if sat.bracket else "",
            "reason": sat.reason,
            "broken": sat.broken,
            "censored": sat.censored,
        },
        "base": (
            {
                "release": base.release,
                "users": fmt.saturation_users(base.saturation),
                "rps": fmt.rps(base.saturation.throughput_rps),
                "users_change": fmt.change(sat.users, base.saturation.users),
                "rps_change": fmt.change(sat.throughput_rps, base.saturation.throughput_rps),
                "created_at": base.created_at,
                "path": base.path,
            }
            if base
            else None
        ),
        "slo_p95": f"p95 ≤ {fmt.ms(result.slo.p95_ms)} ms",
        "slo_errors": f"errors ≤ {fmt.rate(result.slo.error_rate)}",
        "gate_text": _gate_text(result),
        "replicates": ", ".join(fmt.saturation_users(s) for s in result.replicates),
    }


def _chart_context(
    result: RunResult,
    history: History | None,
    steps: tuple[StepStats, ...],
    first: FirstDegraded | None,
    endpoint_keys: list[tuple[str, str]],
) -> dict[str, Any]:
    """Every chart as an inline SVG (None where there is nothing to draw)."""
    base_steps = sorted_steps(result.baseline_steps)
    timeline = None
    if result.timeline or steps:
        timeline = charts.timeline_chart(
            result.timeline,
            sorted(result.steps, key=lambda s: s.started_s),
            slo_p95_ms=result.slo.p95_ms,
        )
    endpoint_chart = None
    if endpoint_keys:
        endpoint_chart = charts.endpoint_chart(
            steps,
            endpoint_keys[:MAX_ENDPOINT_CHARTS],
            slo_p95_ms=result.slo.p95_ms,
            baseline_steps=base_steps,
            first=(first.method, first.name) if first and first.name else None,
        )
    generator_chart = charts.generator_chart(steps)
    rows = history.rows[-MAX_HISTORY:] if history is not None else ()
    history_chart = None
    if rows:
        history_chart = charts.history_chart(
            rows,
            current=(result.release, result.saturation),
            min_users=result.gate.min_users,
            reference=history.reference if history is not None else None,
            current_color=VERDICT_COLORS[verdict_class(result)],
        )
    return {
        "charts": [_svg(c) for c in _main_charts(result, steps, base_steps)],
        "timeline": _svg(timeline) if timeline else None,
        "endpoint_chart": _svg(endpoint_chart) if endpoint_chart else None,
        "generator_chart": _svg(generator_chart) if generator_chart else None,
        "history_chart": _svg(history_chart) if history_chart else None,
        "history_count": len(rows),
        "change_points": [
            f"{p.release} ({fmt.percent(100 * p.change)})"
            for p in (history.change_points if history is not None else ())
            if any(r.release == p.release for r in rows)
        ],
    }


def _event_context(result: RunResult, steps: tuple[StepStats, ...]) -> dict[str, Any]:
    """The event section's table (users.streams): rows, columns, the event SLO in words."""
    return {
        "event_rows": event_rows(steps),
        "event_columns": EVENT_COLUMNS,
        "event_slo": fmt.event_slo(result.slo.event_p95_ms, result.slo.event_loss_rate),
        "event_read_lag_limit": f"{EVENT_READ_LAG_LIMIT_MS:g}",
    }


def _main_charts(
    result: RunResult, steps: tuple[StepStats, ...], base_steps: tuple[StepStats, ...]
) -> list[charts.Chart]:
    """Throughput, latency, latency against throughput and errors, each against users."""
    if not steps:
        return []
    run = charts.RunCurves(
        steps=steps,
        slo=result.slo,
        saturation=result.saturation,
        baseline_steps=base_steps,
        baseline=result.baseline,
        knee_users=_knee_users(result.diagnostics),
    )
    return charts.users_charts(run) + event_charts(run)


def _svg(chart: charts.Chart) -> dict[str, Any]:
    # The SVG was produced by matplotlib, which escapes every text; see charts.clean_svg.
    return {
        "key": chart.key,
        "title": chart.title,
        "caption": chart.caption,
        "svg": Markup(chart.svg),
    }


def _other_reasons(result: RunResult) -> list[str]:
    """Reasons the rules table does not already say (e.g. why a run was aborted)."""
    said = {rule.message for rule in result.rules}
    return [r for r in result.reasons if r not in said]


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _when(iso: str) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS UTC' (as given when it does not parse)."""
    try:
        dt = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso
    offset = dt.utcoffset()
    if offset is not None and offset.total_seconds() == 0:
        return dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    return dt.strftime("%Y-%m-%d %H:%M:%S %z").strip()


def _gate_text(result: RunResult) -> str:
    gate = result.gate
    parts = []
    if gate.min_users is not None:
        parts.append(f"floor {gate.min_users} users")
    parts.append(f"max regression {gate.max_regression * 100:g} %")
    return ", ".join(parts)


def _knee_users(diagnostics: dict[str, Any]) -> float | None:
    """The knee's users level, if the analysis recorded one (keys are optional)."""
    for key in ("knee", "kneedle"):
        value = diagnostics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, dict):
            for k in ("users", "n_star", "knee_users", "n"):
                v = value.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    return float(v)
    return None


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple) and not value:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt.value(value)
    if isinstance(value, int | str) or value is None:
        return "–" if value is None else str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _diagnostics(diag: dict[str, Any]) -> list[dict[str, Any]]:
    """Knee diagnostics as (title, what the method means, what it found, numbers)."""
    # staging and the first-degraded request type have their own sections
    skip = {"staging", DEGRADED_FIRST_KEY} | {
        k for k in diag if k.endswith("_ci") and k[:-3] in diag
    }
    keys = [k for k in DIAGNOSTIC_MEANINGS if k in diag]
    keys += sorted(k for k in diag if k not in DIAGNOSTIC_MEANINGS and k not in skip)
    items = []
    for key in keys:
        title, meaning = DIAGNOSTIC_MEANINGS.get(key, (key.replace("_", " ").capitalize(), ""))
        value = diag[key]
        finding = ""
        if isinstance(value, dict):
            finding = str(value.get("meaning") or "")
            pairs = [
                (str(k), _plain(v) + _ci_suffix(value.get(f"{k}_ci")))
                for k, v in value.items()
                if k != "meaning" and not (k.endswith("_ci") and k[:-3] in value)
            ]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            finding, pairs = _per_level(value)
        else:
            pairs = [("value", _plain(value) + _ci_suffix(diag.get(f"{key}_ci")))]
        items.append(
            {"key": key, "title": title, "meaning": meaning, "finding": finding, "pairs": pairs}
        )
    return items


def _ci_suffix(ci: Any) -> str:
    if (
        isinstance(ci, list | tuple)
        and len(ci) == 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in ci)
    ):
        return f" ({fmt.value(ci[0])}–{fmt.value(ci[1])})"
    return ""


def _per_level(records: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """Summarise per-level records such as the Little's-law check: range and failing levels."""
    ratios = [
        r["ratio"]
        for r in records
        if isinstance(r.get("ratio"), int | float) and r["ratio"] == r["ratio"]
    ]
    bad = [r for r in records if r.get("ok") is False]
    pairs = [("levels", str(len(records)))]
    if ratios:
        pairs.append(("ratio", f"{fmt.value(min(ratios))}–{fmt.value(max(ratios))}"))
    if bad:
        shown = ", ".join(
            f"{r.get('users', '?')} users ({_plain(r.get('ratio'))})" for r in bad[:6]
        )
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        finding = f"does not hold at {len(bad)} of {len(records)} levels: {shown}{more}"
    else:
        finding = f"holds at all {len(records)} levels"
    return finding, pairs


def _staging_info(staging: Any) -> list[tuple[str, str]]:
    if not isinstance(staging, dict):
        return []
    return [(str(k), _plain(v)) for k, v in staging.items()]


def _endpoint_keys(steps: tuple[StepStats, ...]) -> list[tuple[str, str]]:
    """Endpoints (method, name), busiest first."""
    totals: dict[tuple[str, str], int] = {}
    for s in steps:
        for e in s.endpoints:
            totals[(e.method, e.name)] = totals.get((e.method, e.name), 0) + e.requests
    return sorted(totals, key=lambda k: (-totals[k], k))


def _endpoint_rows(
    steps: tuple[StepStats, ...],
    keys: list[tuple[str, str]],
    result: RunResult,
    first: FirstDegraded | None,
) -> list[_EndpointRow]:
    slo = result.slo.p95_ms
    total = sum(e.requests for s in steps for e in s.endpoints) or 1
    last_ok_users = max((s.users for s in steps if s.slo_ok), default=None)
    rows = []
    for key in keys:
        points = [(s.users, e) for s in steps for e in s.endpoints if (e.method, e.name) == key]
        p95s = [(u, e.p95_ms) for u, e in points if e.p95_ms is not None]
        requests = sum(e.requests for _, e in points)
        crossed = next((u for u, p in p95s if p > slo), None)
        last_ok = [p for u, p in p95s if last_ok_users is not None and u <= last_ok_users]
        growth = f"×{p95s[-1][1] / p95s[0][1]:.1f}" if len(p95s) >= 2 and p95s[0][1] > 0 else "–"
        rows.append(
            _EndpointRow(
                method=key[0],
                name=key[1],
                share=f"{requests / total * 100:.0f} %",
                p95_first=fmt.ms(p95s[0][1]) if p95s else "–",
                p95_last_ok=fmt.ms(last_ok[-1]) if last_ok else "–",
                p95_last=fmt.ms(p95s[-1][1]) if p95s else "–",
                growth=growth,
                crossed_at=f"{crossed} users" if crossed is not None else "never",
                max_error=fmt.rate(max((e.error_rate for _, e in points), default=None)),
                first=first is not None and bool(first.name) and key == (first.method, first.name),
            )
        )
    return rows


def _endpoint_matrix(
    steps: tuple[StepStats, ...], keys: list[tuple[str, str]], slo_p95_ms: float
) -> list[dict[str, Any]]:
    """Per step: each endpoint's p95, req/s and error rate (cells over the SLO flagged)."""
    rows = []
    for s in steps:
        if not s.endpoints:
            continue
        by_key = {(e.method, e.name): e for e in s.endpoints}
        cells: list[dict[str, Any] | None] = []
        for key in keys:
            e = by_key.get(key)
            if e is None:
                cells.append(None)
                continue
            cells.append(
                {
                    "p95": fmt.ms(e.p95_ms),
                    "rps": fmt.rps(e.throughput_rps),
                    "err": fmt.rate(e.error_rate) if e.error_rate else "",
                    "over": e.p95_ms is not None and e.p95_ms > slo_p95_ms,
                }
            )
        rows.append({"users": s.users, "index": s.index, "slo_ok": s.slo_ok, "cells": cells})
    return rows


def _generator_rows(steps: tuple[StepStats, ...]) -> list[dict[str, Any]]:
    rows = []
    for s in steps:
        g = s.generator
        if g is None:
            continue
        rows.append(
            {
                "users": s.users,
                "cpu": f"{g.cpu_percent:.0f} %",
                "lag": fmt.ms(g.loop_lag_ms),
                "little": f"{g.little_ratio:.2f}" if g.little_ratio is not None else "–",
                "limited": g.limited,
                "reason": g.reason,
            }
        )
    return rows


def _fingerprint_rows(run: Fingerprint | None, base: Fingerprint | None) -> list[dict[str, Any]]:
    if run is None and base is None:
        return []
    rows = []
    for f in fields(Fingerprint):
        a = getattr(run, f.name) if run else None
        b = getattr(base, f.name) if base else None
        rows.append(
            {
                "label": FINGERPRINT_LABELS.get(f.name, f.name),
                "run": "–" if a in (None, "") else str(a),
                "base": "–" if b in (None, "") else str(b),
                "differs": run is not None and base is not None and a != b,
            }
        )
    return rows


def _comparability_note(result: RunResult, base: BaselineRef | None) -> str:
    if base is None:
        return "No baseline: nothing to compare against; the floor alone decides."
    run_fp, base_fp = result.fingerprint, base.fingerprint
    if run_fp is None or base_fp is None:
        return "The run or the baseline has no fingerprint, so comparability cannot be checked."
    differing = [
        f.name for f in fields(Fingerprint) if getattr(run_fp, f.name) != getattr(base_fp, f.name)
    ]
    if not differing:
        return (
            "Run and baseline were measured in the same environment: the comparison is like "
            "for like."
        )
    names = ", ".join(FINGERPRINT_LABELS.get(n, n) for n in differing)
    if any(n in _MUST_MATCH for n in differing):
        return (
            f"Not comparable: the baseline was measured with a different {names}. "
            "Its numbers describe a different test."
        )
    return (
        f"Environment differs ({names}): part of any difference may come from the environment, "
        "not the release."
    )


def _tables(steps: tuple[StepStats, ...]) -> dict[str, Any]:
    """The response-time distribution and the errors table (shared with summary.md)."""
    levels, rows = tables.error_table(steps)
    return {
        "distribution": tables.distribution(steps),
        "distribution_labels": [label for label, _ in tables.DISTRIBUTION],
        "error_levels": levels,
        "error_rows": rows,
    }


def _step_row(s: StepStats) -> dict[str, Any]:
    g = s.generator
    return {
        "index": s.index,
        "phase": s.phase,
        "users": s.users,
        "duration": f"{s.duration_s:.1f}",
        "requests": s.requests,
        "failures": s.failures,
        "rps": fmt.rps(s.throughput_rps),
        "p50": fmt.ms(s.p50_ms),
        "p95": fmt.ms(s.p95_ms),
        "p95_ci": fmt.interval(s.p95_ci_ms, fmt.ms),
        "p99": fmt.ms(s.p99_ms),
        "err": fmt.rate(s.error_rate),
        "slo_ok": s.slo_ok,
        "slo_reason": s.slo_reason,
        "stalls": s.stalls,
        "cpu": f"{g.cpu_percent:.0f} %" if g else "",
        "little": f"{g.little_ratio:.2f}" if g and g.little_ratio is not None else "",
        "limited": bool(g and g.limited),
        "errors": "; ".join(f"{msg} ×{n}" for msg, n in s.errors[:3]),
    }


__all__ = ["render_html"]
