""" "Why it broke": the bottleneck's sentence, its cost and what was not measured, as lines of
text shared by the console, summary.md and index.html (which adds the resource curves)."""

from __future__ import annotations

from dataclasses import dataclass

from perfgate.models import RunResult

MAX_MISSING = 3  # "not measured" lines on the console (the report lists them all)


@dataclass(frozen=True, slots=True, kw_only=True)
class Why:
    sentence: str
    confidence: str
    evidence: tuple[str, ...]
    cost: str
    events: tuple[str, ...]
    missing: tuple[str, ...]


def why(result: RunResult) -> Why | None:
    """What the report says under the verdict; None when no telemetry ran."""
    b = result.bottleneck
    if b is None:
        return None
    events = tuple(
        dict.fromkeys(e for s in result.steps if s.resources for e in s.resources.events)
    )
    return Why(
        sentence=b.sentence,
        confidence=b.confidence,
        evidence=b.evidence,
        cost=b.cost.text if b.cost is not None else "",
        events=events,
        missing=b.missing,
    )


def console_lines(result: RunResult) -> list[str]:
    """The console's lines (ASCII punctuation where terminals may lack the glyph)."""
    w = why(result)
    if w is None:
        return []
    lines = [f"  why: {w.sentence} (confidence {w.confidence})"]
    if w.cost:
        lines.append(f"  cost: {w.cost}")
    lines += [f"  during the run: {e}" for e in w.events]
    if result.bottleneck is not None and result.bottleneck.kind != "unmeasured":  # else said
        lines += [f"  not measured: {m}" for m in w.missing[:MAX_MISSING]]
        if len(w.missing) > MAX_MISSING:
            lines.append(f"  not measured: {len(w.missing) - MAX_MISSING} more (see the report)")
    return [line.replace("—", "-").replace("×", "x").replace("≈", "~") for line in lines]
